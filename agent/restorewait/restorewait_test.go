package restorewait

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func writeMarker(t *testing.T, volume, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(volume, MarkerDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(volume, MarkerDir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReturnsOnceEveryVolumeIsMarkedAndRemovesMarkers(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeMarker(t, a, "uid-1", "")
	writeMarker(t, b, "other-restore", "") // another restore's marker must survive

	done := make(chan error, 1)
	go func() {
		done <- Wait(context.Background(), Options{Volumes: []string{a, b}, RestoreUID: "uid-1", Interval: 5 * time.Millisecond})
	}()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before volume b was marked: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	writeMarker(t, b, "uid-1", "")
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a, MarkerDir)); !os.IsNotExist(err) {
		t.Errorf("marker directory in a should be gone, stat err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(b, MarkerDir, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("marker uid-1 in b should be gone, stat err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(b, MarkerDir, "other-restore")); err != nil {
		t.Errorf("another restore's marker was removed: %v", err)
	}
}

func TestWaitFailsWithTheAgentsReason(t *testing.T) {
	a := t.TempDir()
	writeMarker(t, a, "uid-1"+FailedSuffix, "snapshot k123 not found in the repository\n")
	err := Wait(context.Background(), Options{Volumes: []string{a}, RestoreUID: "uid-1", Interval: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "snapshot k123 not found in the repository") {
		t.Fatalf("Wait error = %v, want the agent's reason", err)
	}
}

func TestWaitRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no volume", Options{RestoreUID: "x"}, "no --volume given"},
		{"no uid", Options{Volumes: []string{"/v"}}, "is not a UID"},
		{"path in uid", Options{Volumes: []string{"/v"}, RestoreUID: "../x"}, "is not a UID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Wait(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWaitStopsWhenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Wait(ctx, Options{Volumes: []string{t.TempDir()}, RestoreUID: "u", Interval: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "stopped while waiting for 1 volume(s)") {
		t.Fatalf("error = %v", err)
	}
}

// restore-wait always ends: a restore whose markers never come (the agent never ran,
// the restore was deleted) ends the init container with the reason after its deadline.
func TestWaitGivesUpAtItsDeadline(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeMarker(t, a, "uid-1", "")
	start := time.Now()
	err := Wait(context.Background(), Options{Volumes: []string{a, b}, RestoreUID: "uid-1", Interval: 5 * time.Millisecond, Deadline: 100 * time.Millisecond})
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("error = %v, want ErrDeadline", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("gave up after %s, before the deadline", took)
	}
	for _, want := range []string{"gave up after 100ms", "restore uid-1", b, "kubectl describe vr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), a+",") || strings.HasSuffix(err.Error(), a) {
		t.Errorf("error %q names the volume that was restored", err)
	}
	// Nothing of the restored volume was released: its marker stays for a retry.
	if _, err := os.Stat(filepath.Join(a, MarkerDir, "uid-1")); err != nil {
		t.Errorf("the marker of the restored volume was removed although the pod does not start: %v", err)
	}
}

func TestArgsCarryTheDeadline(t *testing.T) {
	got := Args("u-1", []string{"data", "cache"}, "", 90*time.Minute)
	want := []string{"restore-wait", "--restore-uid", "u-1", "--volume", "/holdfast-restore/data", "--volume", "/holdfast-restore/cache", "--deadline", "1h30m0s"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Args = %v, want %v", got, want)
	}
	c := Container("holdfast-restore-wait", "u-1", []string{"data"}, "", 0, corev1.Container{Image: "img"})
	if UIDOf(&c) != "u-1" || c.VolumeMounts[0].MountPath != "/holdfast-restore/data" || strings.Contains(strings.Join(c.Args, " "), "--deadline") {
		t.Errorf("Container = %+v", c)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{c}}}
	if !Holds(pod, "u-1") || Holds(pod, "u-2") || Holds(pod, "") {
		t.Errorf("Holds does not read the container Container makes")
	}
}

func TestRestoreUIDOf(t *testing.T) {
	yes := true
	pvr := &v1.PodVolumeRestore{Spec: v1.PodVolumeRestoreSpec{VolumeRestore: "r"}}
	if got := RestoreUIDOf(pvr); got != "" {
		t.Errorf("no owner: %q", got)
	}
	pvr.OwnerReferences = []metav1.OwnerReference{{Kind: "VolumeRestore", Name: "other", UID: "u-other", Controller: &yes}}
	if got := RestoreUIDOf(pvr); got != "" {
		t.Errorf("an owner other than spec.volumeRestore: %q", got)
	}
	pvr.OwnerReferences = append(pvr.OwnerReferences, metav1.OwnerReference{Kind: "VolumeRestore", Name: "r", UID: "u-r"})
	if got := RestoreUIDOf(pvr); got != "" {
		t.Errorf("an owner that is not the controller: %q", got)
	}
	// An object has at most one controller.
	pvr.OwnerReferences[0].Controller, pvr.OwnerReferences[1].Controller = nil, &yes
	if got := RestoreUIDOf(pvr); got != "u-r" {
		t.Errorf("RestoreUIDOf = %q, want u-r", got)
	}
}

// IsContainer knows the container Container makes, of any restore, and nothing else.
func TestIsContainer(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    corev1.Container
		want bool
	}{
		{"made by Container", Container(ContainerName, "u-1", []string{"data"}, "", time.Hour, corev1.Container{Image: "img"}), true},
		{"of another restore, renamed", Container(ContainerName+"-2", "u-2", nil, "", 0, corev1.Container{}), true},
		{"the application's init container", corev1.Container{Name: "migrate", Args: []string{"migrate", "--volume", "/data"}}, false},
		{"no arguments", corev1.Container{Name: ContainerName}, false},
		{"the flag as a value", corev1.Container{Name: "x", Args: []string{"--restore-uid=u-1"}}, false},
	} {
		if got := IsContainer(&tc.c); got != tc.want {
			t.Errorf("%s: IsContainer = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Issue 15 item 4: a claim that several held pods mount is restored once, and that
// one restore releases every pod's restore-wait: each waits for its own marker, the
// first to finish removes only its own, and a failure reaches them all.
func TestOneRestoreReleasesEveryPodOnASharedClaim(t *testing.T) {
	vol := t.TempDir()
	for _, pod := range []string{"pod-a", "pod-b"} {
		if err := WriteMarkerFor(vol, "vr-1", pod, UnknownOwner, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, pod := range []string{"pod-a", "pod-b"} { // one after the other, as pods start
		err := Wait(context.Background(), Options{Volumes: []string{vol}, RestoreUID: "vr-1", PodUID: pod,
			Interval: time.Millisecond, Deadline: 2 * time.Second})
		if err != nil {
			t.Fatalf("restore-wait of %s: %v", pod, err)
		}
	}
	if _, err := os.Stat(filepath.Join(vol, MarkerDir)); !os.IsNotExist(err) {
		t.Errorf("%s should be gone once both pods started, stat err = %v", MarkerDir, err)
	}

	failed := t.TempDir()
	for _, pod := range []string{"pod-a", "pod-b"} {
		if err := WriteMarkerFor(failed, "vr-1", pod, UnknownOwner, "snapshot k1 not found"); err != nil {
			t.Fatal(err)
		}
	}
	for _, pod := range []string{"pod-a", "pod-b"} {
		err := Wait(context.Background(), Options{Volumes: []string{failed}, RestoreUID: "vr-1", PodUID: pod,
			Interval: time.Millisecond, Deadline: 2 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "snapshot k1 not found") {
			t.Fatalf("restore-wait of %s: error %v, want the agent's reason", pod, err)
		}
	}
}

// A restore-wait that knows its pod ignores the marker of another pod.
func TestWaitForAPodIgnoresAnotherPodsMarker(t *testing.T) {
	vol := t.TempDir()
	if err := WriteMarkerFor(vol, "vr-1", "pod-b", UnknownOwner, ""); err != nil {
		t.Fatal(err)
	}
	err := Wait(context.Background(), Options{Volumes: []string{vol}, RestoreUID: "vr-1", PodUID: "pod-a",
		Interval: time.Millisecond, Deadline: 50 * time.Millisecond})
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("Wait = %v, want the deadline", err)
	}
	if _, err := os.Stat(filepath.Join(vol, MarkerDir, MarkerName("vr-1", "pod-b"))); err != nil {
		t.Errorf("pod-b's marker was touched: %v", err)
	}
}

func TestContainerTellsRestoreWaitItsPod(t *testing.T) {
	c := Container(ContainerName, "vr-1", []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "pod-a"}, Spec: corev1.PodSpec{InitContainers: []corev1.Container{c}}}
	if got := MarkerPodUID(pod, "vr-1"); got != "pod-a" {
		t.Errorf("MarkerPodUID = %q, want pod-a", got)
	}
	pod.Spec.InitContainers[0].Env = nil // admitted before restore-wait knew its pod
	if got := MarkerPodUID(pod, "vr-1"); got != "" {
		t.Errorf("MarkerPodUID without %s = %q, want \"\"", EnvPodUID, got)
	}
}
