package restorewait

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubeletEmptyDir makes a directory as the kubelet makes an emptyDir for a pod with an
// fsGroup: mode 0777 with setgid, of the pod's group.
func kubeletEmptyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), MarkerVolumeName)
	must(t, os.Mkdir(dir, 0o777))
	must(t, os.Chown(dir, 0, 2000))
	must(t, os.Chmod(dir, 0o777|os.ModeSetgid))
	return dir
}

// waitInMarkerVolume runs Wait on the marker volume for a moment, for the volume named
// volume, which it never opens (its mount path does not exist here).
func waitInMarkerVolume(t *testing.T, markerDir, uid string, volumes ...string) (string, error) {
	t.Helper()
	var paths []string
	for _, v := range volumes {
		paths = append(paths, MountPath(v))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var log bytes.Buffer
	err := Wait(ctx, Options{Volumes: paths, RestoreUID: uid, PodUID: "pod-1", MarkerDir: markerDir,
		Interval: 10 * time.Millisecond, Log: &log})
	return log.String(), err
}

// The agent takes the marker volume (root's, 0755) and writes one marker per volume;
// restore-wait, as an unprivileged user, finds them without opening the volumes, and
// leaves them for an init container that runs again.
func TestWriteVolumeMarkerReleasesRestoreWaitWithoutTheVolumes(t *testing.T) {
	requireRoot(t)
	dir := kubeletEmptyDir(t)
	must(t, WriteVolumeMarker(dir, "uid-1", "data", ""))
	checkOwnerMode(t, dir, 0, 0, os.ModeDir|0o755)
	checkOwnerMode(t, filepath.Join(dir, "uid-1.data"), 0, 0, 0o644)

	runAs(t, 65534)
	if log, err := waitInMarkerVolume(t, dir, "uid-1", "data", "cache"); !errors.Is(err, context.DeadlineExceeded) || strings.Contains(log, "ignoring") {
		t.Fatalf("Wait with cache not restored yet: %v\n%s", err, log)
	}
	must(t, WriteVolumeMarker(dir, "uid-1", "cache", ""))
	if log, err := waitInMarkerVolume(t, dir, "uid-1", "data", "cache"); err != nil {
		t.Fatalf("Wait: %v\n%s", err, log)
	}
	if log, err := waitInMarkerVolume(t, dir, "uid-1", "data", "cache"); err != nil {
		t.Fatalf("Wait run again: %v\n%s", err, log)
	}

	must(t, WriteVolumeMarker(dir, "uid-2", "data", "snapshot k1 is gone"))
	checkOwnerMode(t, filepath.Join(dir, "uid-2.data"+FailedSuffix), 0, 0, 0o644)
	if _, err := waitInMarkerVolume(t, dir, "uid-2", "data"); err == nil || !strings.Contains(err.Error(), "snapshot k1 is gone") {
		t.Errorf("Wait on the failed restore: %v, want the agent's reason", err)
	}
}

// restore-wait takes from the marker volume only what the agent wrote there, says once
// why it ignores anything else, and the agent's marker then releases it.
func TestWaitInTheMarkerVolumeRefusesMarkersTheAgentDidNotWrite(t *testing.T) {
	requireRoot(t)
	runAs(t, 65534)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir string)
		log   string
	}{
		{"a marker of another user", func(t *testing.T, dir string) {
			must(t, WriteVolumeMarker(dir, "other", "data", ""))
			forgeIn(t, dir, "uid-1.data", 1000)
		}, "owned by uid 1000, not by the agent"},
		{"a forged failure", func(t *testing.T, dir string) {
			must(t, WriteVolumeMarker(dir, "other", "data", ""))
			forgeIn(t, dir, "uid-1.data"+FailedSuffix, 65534)
		}, "owned by uid 65534, not by the agent"},
		{"a symlink to the agent's marker", func(t *testing.T, dir string) {
			must(t, WriteVolumeMarker(dir, "other", "data", ""))
			must(t, os.Symlink("other.data", filepath.Join(dir, "uid-1.data")))
		}, "not a regular file"},
		{"a symlink at the failure marker's place", func(t *testing.T, dir string) {
			must(t, WriteVolumeMarker(dir, "other", "data", "a reason"))
			must(t, os.Symlink("other.data"+FailedSuffix, filepath.Join(dir, "uid-1.data"+FailedSuffix)))
		}, "is a symlink"},
		{"a root-owned marker before the agent took the volume", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "uid-1.data"), nil, 0o644))
		}, "with mode 2777; the agent makes it root's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := kubeletEmptyDir(t)
			tc.plant(t, dir)
			log, err := waitInMarkerVolume(t, dir, "uid-1", "data")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait = %v, want it still waiting\n%s", err, log)
			}
			if !strings.Contains(log, tc.log) || strings.Count(log, "ignoring") != 1 {
				t.Errorf("log %q, want one line saying %q", log, tc.log)
			}
			for _, n := range []string{"uid-1.data", "uid-1.data" + FailedSuffix} {
				if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			must(t, WriteVolumeMarker(dir, "uid-1", "data", ""))
			if log, err := waitInMarkerVolume(t, dir, "uid-1", "data"); err != nil {
				t.Errorf("Wait after the agent's marker: %v\n%s", err, log)
			}
		})
	}
}

// The marker of another volume or another restore does not release restore-wait.
func TestWaitInTheMarkerVolumeWantsItsOwnMarkers(t *testing.T) {
	requireRoot(t)
	dir := kubeletEmptyDir(t)
	must(t, WriteVolumeMarker(dir, "uid-1", "cache", ""))
	must(t, WriteVolumeMarker(dir, "uid-2", "data", ""))
	runAs(t, 65534)
	if log, err := waitInMarkerVolume(t, dir, "uid-1", "data"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want it still waiting\n%s", err, log)
	}
}

// The agent follows no symlink: not at the marker volume's place, not at a marker's.
func TestWriteVolumeMarkerFollowsNoSymlink(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	must(t, os.Chmod(outside, 0o700))
	link := filepath.Join(t.TempDir(), "link")
	must(t, os.Symlink(outside, link))
	if err := WriteVolumeMarker(link, "uid-1", "data", ""); err == nil {
		t.Error("WriteVolumeMarker wrote through a symlink to a directory")
	}
	checkOwnerMode(t, outside, 0, 0, os.ModeDir|0o700)
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the symlink's target holds %v", entries)
	}

	dir := kubeletEmptyDir(t)
	victim := filepath.Join(outside, "victim")
	must(t, os.WriteFile(victim, []byte("keep\n"), 0o600))
	must(t, os.Symlink(victim, filepath.Join(dir, "uid-1.data")))
	must(t, WriteVolumeMarker(dir, "uid-1", "data", ""))
	checkOwnerMode(t, filepath.Join(dir, "uid-1.data"), 0, 0, 0o644)
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

func TestWaitInTheMarkerVolumeRefusesAVolumeItCannotName(t *testing.T) {
	err := Wait(context.Background(), Options{Volumes: []string{"/holdfast-restore/a.b"}, RestoreUID: "u", MarkerDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "is not a volume name") {
		t.Errorf("Wait = %v, want the volume refused", err)
	}
	if err := WriteVolumeMarker(t.TempDir(), "u", "../x", ""); err == nil {
		t.Error("WriteVolumeMarker took a path as a volume name")
	}
}

// forgeIn writes a marker into the marker volume as a process of uid would.
func forgeIn(t *testing.T, dir, name string, uid int) {
	t.Helper()
	path := filepath.Join(dir, name)
	must(t, os.WriteFile(path, []byte("restored\n"), 0o644))
	must(t, os.Chown(path, uid, uid))
}

// The container the webhook makes now reads its markers in the marker volume, which
// it alone mounts, read-only, as it does the volumes it waits for.
func TestContainerWithAMarkerVolume(t *testing.T) {
	c := Container(ContainerName, "u-1", []string{"data"}, "holdfast-restore-markers-2", time.Hour, corev1.Container{Image: "img"})
	want := "restore-wait --restore-uid u-1 --volume /holdfast-restore/data --marker-dir /holdfast-markers --deadline 1h0m0s"
	if got := strings.Join(c.Args, " "); got != want {
		t.Errorf("args %q, want %q", got, want)
	}
	wantMounts := []corev1.VolumeMount{{Name: "data", MountPath: "/holdfast-restore/data", ReadOnly: true},
		{Name: "holdfast-restore-markers-2", MountPath: MarkerMountPath, ReadOnly: true}}
	if !equality.Semantic.DeepEqual(c.VolumeMounts, wantMounts) {
		t.Errorf("mounts %+v, want %+v", c.VolumeMounts, wantMounts)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{c},
		Containers: []corev1.Container{{Name: "app", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
		Volumes:    []corev1.Volume{{Name: "data"}, MarkerVolume("holdfast-restore-markers-2")}}}
	if got, err := MarkerVolumeOf(pod, "u-1"); got != "holdfast-restore-markers-2" || err != nil {
		t.Errorf("MarkerVolumeOf = %q, %v", got, err)
	}
	if got, err := MarkerVolumeOf(pod, "u-2"); got != "" || err != nil {
		t.Errorf("MarkerVolumeOf another restore = %q, %v", got, err)
	}
	if !IsMarkerVolume(pod, "holdfast-restore-markers-2") || IsMarkerVolume(pod, "data") {
		t.Errorf("IsMarkerVolume does not tell the marker volume from the data")
	}
	legacy := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{Container(ContainerName, "u-1", []string{"data"}, "", 0, corev1.Container{})},
		Volumes: []corev1.Volume{{Name: "data"}}}}
	if IsMarkerVolume(legacy, "data") {
		t.Errorf("IsMarkerVolume takes a volume restore-wait waits for as a marker volume")
	}
	v := MarkerVolume("x")
	if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.String() != "1Mi" {
		t.Errorf("MarkerVolume = %+v", v)
	}
}

// The agent writes into the marker volume only when restore-wait alone mounts it, and
// writes into the volumes for a pod admitted before the marker volume.
func TestMarkerVolumeOf(t *testing.T) {
	wait := Container(ContainerName, "u-1", []string{"data"}, MarkerVolumeName, 0, corev1.Container{})
	legacy := Container(ContainerName, "u-1", []string{"data"}, "", 0, corev1.Container{})
	pod := func(mutate func(*corev1.PodSpec)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{InitContainers: []corev1.Container{wait},
			Containers: []corev1.Container{{Name: "app"}}, Volumes: []corev1.Volume{{Name: "data"}, MarkerVolume(MarkerVolumeName)}}}
		mutate(&p.Spec)
		return p
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		want    string
		wantErr string
	}{
		{"as the webhook makes it", pod(func(*corev1.PodSpec) {}), MarkerVolumeName, ""},
		{"admitted before the marker volume", pod(func(s *corev1.PodSpec) { s.InitContainers[0] = legacy }), "", ""},
		{"an application container mounts it", pod(func(s *corev1.PodSpec) {
			s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: MarkerVolumeName, MountPath: "/m"}}
		}), "", "container app mounts restore-wait's marker volume"},
		{"an ephemeral container mounts it", pod(func(s *corev1.PodSpec) {
			s.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
				VolumeMounts: []corev1.VolumeMount{{Name: MarkerVolumeName, MountPath: "/m"}}}}}
		}), "", "container debug mounts"},
		{"not memory-backed", pod(func(s *corev1.PodSpec) {
			s.Volumes[1].EmptyDir.Medium = ""
		}), "", "is not a memory-backed emptyDir"},
		{"no volume at the marker dir", pod(func(s *corev1.PodSpec) {
			s.InitContainers[0].VolumeMounts = s.InitContainers[0].VolumeMounts[:1]
		}), "", "where it mounts no volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MarkerVolumeOf(tc.pod, "u-1")
			if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("MarkerVolumeOf = %q, %v; want %q, %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// The marker volume's name is one the pod does not use: not for a volume, and not in
// a mount of a volume it has not declared (that container would mount the marker
// volume once the webhook adds it).
func TestNextMarkerVolumeName(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{{Name: MarkerVolumeName}},
		Containers: []corev1.Container{{Name: "app", VolumeMounts: []corev1.VolumeMount{
			{Name: MarkerVolumeName + "-2", MountPath: "/m"}}}},
		InitContainers: []corev1.Container{{Name: "init", VolumeDevices: []corev1.VolumeDevice{{Name: MarkerVolumeName + "-3", DevicePath: "/dev/x"}}}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
			VolumeMounts: []corev1.VolumeMount{{Name: MarkerVolumeName + "-4", MountPath: "/m"}}}}},
	}}
	if got := NextMarkerVolumeName(pod); got != MarkerVolumeName+"-5" {
		t.Errorf("NextMarkerVolumeName = %q, want %s-5", got, MarkerVolumeName)
	}
	if got := NextMarkerVolumeName(&corev1.Pod{}); got != MarkerVolumeName {
		t.Errorf("NextMarkerVolumeName of a pod without volumes = %q", got)
	}
}
