package restorewait

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// restoreWaitUser is the user restore-wait runs as by default (the webhook's helper).
var restoreWaitUser = Owner{UID: 65534, GID: 65534}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent side runs as root: it changes owners")
	}
}

// runAs makes restore-wait's checks, in this test, those of a container running as uid.
func runAs(t *testing.T, uid int) {
	old := geteuid
	geteuid = func() int { return uid }
	t.Cleanup(func() { geteuid = old })
}

func stat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func checkOwnerMode(t *testing.T, path string, uid, gid uint32, mode os.FileMode) {
	t.Helper()
	st := stat(t, path)
	fi, _ := os.Lstat(path)
	if st.Uid != uid || st.Gid != gid || fi.Mode() != mode {
		t.Errorf("%s: uid %d gid %d mode %v, want %d %d %v", path, st.Uid, st.Gid, fi.Mode(), uid, gid, mode)
	}
}

// waitBriefly runs Wait for a moment and returns its error and log.
func waitBriefly(t *testing.T, vol, uid string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var log bytes.Buffer
	err := Wait(ctx, Options{Volumes: []string{vol}, RestoreUID: uid, Interval: 10 * time.Millisecond, Log: &log})
	return log.String(), err
}

// The agent's marker directory belongs to restore-wait's user, mode 0700, and the
// markers to root: restore-wait accepts them, removes them, and the volume is clean.
func TestWriteMarkerForRestoreWaitsUser(t *testing.T) {
	requireRoot(t)
	vol := t.TempDir()
	if err := WriteMarkerFor(vol, "uid-1", "", restoreWaitUser, ""); err != nil {
		t.Fatal(err)
	}
	checkOwnerMode(t, filepath.Join(vol, MarkerDir), 65534, 65534, os.ModeDir|0o700)
	checkOwnerMode(t, filepath.Join(vol, MarkerDir, "uid-1"), 0, 0, 0o644)
	if err := WriteMarkerFor(vol, "uid-2", "", restoreWaitUser, "snapshot k1 is gone"); err != nil {
		t.Fatal(err)
	}
	checkOwnerMode(t, filepath.Join(vol, MarkerDir, "uid-2"+FailedSuffix), 0, 0, 0o644)
	if entries, _ := os.ReadDir(filepath.Join(vol, MarkerDir)); len(entries) != 2 {
		t.Errorf("marker directory holds %v, want the two markers only", entries)
	}

	runAs(t, 65534)
	if log, err := waitBriefly(t, vol, "uid-1"); err != nil {
		t.Fatalf("Wait: %v\n%s", err, log)
	}
	if _, err := os.Lstat(filepath.Join(vol, MarkerDir, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("the done-marker is still there: %v", err)
	}
	if _, err := waitBriefly(t, vol, "uid-2"); err == nil || !strings.Contains(err.Error(), "snapshot k1 is gone") {
		t.Errorf("Wait on the failed restore: %v, want the agent's reason", err)
	}
}

// Without a user in the pod's spec, the directory is root's and readable: restore-wait
// proceeds and leaves the marker it cannot remove, saying so.
func TestWriteMarkerForAnUnknownUser(t *testing.T) {
	requireRoot(t)
	vol := t.TempDir()
	if err := WriteMarkerFor(vol, "uid-1", "", UnknownOwner, ""); err != nil {
		t.Fatal(err)
	}
	checkOwnerMode(t, filepath.Join(vol, MarkerDir), 0, 0, os.ModeDir|0o755)
	runAs(t, 65532)
	if log, err := waitBriefly(t, vol, "uid-1"); err != nil || strings.Contains(log, "ignoring") {
		t.Fatalf("Wait: %v\n%s", err, log)
	}
}

// A .holdfast that the agent did not make (world-writable, as the agent used to make
// it; another owner; a symlink; a file) is replaced, and what was in it is gone.
func TestWriteMarkerReplacesWhatItDidNotMake(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, vol string)
	}{
		{"world-writable directory with a forged marker", func(t *testing.T, vol string) {
			dir := filepath.Join(vol, MarkerDir)
			must(t, os.Mkdir(dir, 0o777))
			must(t, os.Chmod(dir, 0o777))
			must(t, os.WriteFile(filepath.Join(dir, "uid-1"), nil, 0o644))
			must(t, os.WriteFile(filepath.Join(dir, "uid-9"), nil, 0o644))
		}},
		{"directory of another user", func(t *testing.T, vol string) {
			dir := filepath.Join(vol, MarkerDir)
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
			must(t, os.WriteFile(filepath.Join(dir, "sub", "x"), nil, 0o644))
			must(t, os.Chown(dir, 1000, 1000))
		}},
		{"symlink to the volume root", func(t *testing.T, vol string) {
			must(t, os.Symlink(".", filepath.Join(vol, MarkerDir)))
		}},
		{"symlink to a directory outside", func(t *testing.T, vol string) {
			must(t, os.Symlink(t.TempDir(), filepath.Join(vol, MarkerDir)))
		}},
		{"file", func(t *testing.T, vol string) {
			must(t, os.WriteFile(filepath.Join(vol, MarkerDir), []byte("x"), 0o666))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			must(t, os.Chmod(vol, 0o750))
			tc.plant(t, vol)
			if err := WriteMarkerFor(vol, "uid-1", "", restoreWaitUser, ""); err != nil {
				t.Fatal(err)
			}
			checkOwnerMode(t, vol, 0, 0, os.ModeDir|0o750)
			checkOwnerMode(t, filepath.Join(vol, MarkerDir), 65534, 65534, os.ModeDir|0o700)
			checkOwnerMode(t, filepath.Join(vol, MarkerDir, "uid-1"), 0, 0, 0o644)
			entries, _ := os.ReadDir(filepath.Join(vol, MarkerDir))
			if len(entries) != 1 {
				t.Errorf("marker directory holds %v, want only the agent's marker", entries)
			}
		})
	}
}

// A container sharing the volume swaps .holdfast for a symlink to the volume root
// between the agent's mkdir and the rest: the volume root keeps its owner and mode,
// and the marker lands in a directory of its own.
func TestWriteMarkerSymlinkPlantedDuringTheWrite(t *testing.T) {
	requireRoot(t)
	vol := t.TempDir()
	must(t, os.Chmod(vol, 0o750))
	swaps := 0
	testHookMarkerDirMade = func() {
		if swaps < 2 {
			swaps++
			must(t, os.Remove(filepath.Join(vol, MarkerDir)))
			must(t, os.Symlink(".", filepath.Join(vol, MarkerDir)))
		}
	}
	t.Cleanup(func() { testHookMarkerDirMade = func() {} })
	if err := WriteMarkerFor(vol, "uid-1", "", restoreWaitUser, ""); err != nil {
		t.Fatal(err)
	}
	if swaps != 2 {
		t.Fatalf("the test swapped %d times, want 2", swaps)
	}
	checkOwnerMode(t, vol, 0, 0, os.ModeDir|0o750)
	checkOwnerMode(t, filepath.Join(vol, MarkerDir), 65534, 65534, os.ModeDir|0o700)
	if _, err := os.Lstat(filepath.Join(vol, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("a marker was written at the volume root: %v", err)
	}

	// A container that keeps swapping makes the write fail, never follow.
	vol = t.TempDir()
	must(t, os.Chmod(vol, 0o750))
	testHookMarkerDirMade = func() {
		must(t, os.Remove(filepath.Join(vol, MarkerDir)))
		must(t, os.Symlink(".", filepath.Join(vol, MarkerDir)))
	}
	if err := WriteMarkerFor(vol, "uid-1", "", restoreWaitUser, ""); err == nil {
		t.Error("WriteMarkerFor succeeded although .holdfast was a symlink at every attempt")
	}
	checkOwnerMode(t, vol, 0, 0, os.ModeDir|0o750)
}

// restore-wait takes only what the agent wrote: markers owned by root in a directory
// of its own user (or root) that nobody else can write. Anything else is logged once
// and waited past, and a forged failure does not stop it either.
func TestWaitRefusesMarkersTheAgentDidNotWrite(t *testing.T) {
	requireRoot(t)
	runAs(t, 65534)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, vol string)
		log   string
	}{
		{"a marker of another user", func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "other", "", restoreWaitUser, ""))
			forge(t, vol, "uid-1", 1000)
		}, "owned by uid 1000, not by the agent"},
		{"a marker of restore-wait's own user", func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "other", "", restoreWaitUser, ""))
			forge(t, vol, "uid-1", 65534)
		}, "owned by uid 65534, not by the agent"},
		{"a forged failure", func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "other", "", restoreWaitUser, ""))
			forge(t, vol, "uid-1"+FailedSuffix, 1000)
		}, "owned by uid 1000, not by the agent"},
		{"a directory of another user with a root-owned marker", func(t *testing.T, vol string) {
			must(t, os.Mkdir(filepath.Join(vol, MarkerDir), 0o700))
			must(t, os.WriteFile(filepath.Join(vol, MarkerDir, "uid-1"), nil, 0o644))
			must(t, os.Chown(filepath.Join(vol, MarkerDir), 1000, 1000))
		}, "owned by uid 1000 with mode 0700"},
		{"a world-writable directory", func(t *testing.T, vol string) {
			must(t, os.Mkdir(filepath.Join(vol, MarkerDir), 0o777))
			must(t, os.Chmod(filepath.Join(vol, MarkerDir), 0o777))
			must(t, os.WriteFile(filepath.Join(vol, MarkerDir, "uid-1"), nil, 0o644))
		}, "with mode 0777"},
		{"a symlink", func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "other", "", restoreWaitUser, ""))
			must(t, os.Symlink("other", filepath.Join(vol, MarkerDir, "uid-1")))
		}, "not a regular file"},
		{"the marker directory as a symlink", func(t *testing.T, vol string) {
			real := t.TempDir()
			must(t, WriteMarkerFor(real, "uid-1", "", restoreWaitUser, ""))
			must(t, os.Symlink(filepath.Join(real, MarkerDir), filepath.Join(vol, MarkerDir)))
		}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			tc.plant(t, vol)
			log, err := waitBriefly(t, vol, "uid-1")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait = %v, want it still waiting\n%s", err, log)
			}
			if !strings.Contains(log, tc.log) || strings.Count(log, "ignoring") != 1 {
				t.Errorf("log %q, want one line saying %q", log, tc.log)
			}
			// The agent's marker then releases it.
			must(t, WriteMarkerFor(vol, "uid-1", "", restoreWaitUser, ""))
			if log, err := waitBriefly(t, vol, "uid-1"); err != nil {
				t.Errorf("Wait after the agent's marker: %v\n%s", err, log)
			}
		})
	}
}

// forge writes a marker as a process of uid would: a file it owns.
func forge(t *testing.T, vol, name string, uid int) {
	t.Helper()
	path := filepath.Join(vol, MarkerDir, name)
	must(t, os.WriteFile(path, []byte("restored\n"), 0o644))
	must(t, os.Chown(path, uid, uid))
}

func TestRunsAs(t *testing.T) {
	waiter := func(sc *corev1.SecurityContext) corev1.Container {
		return corev1.Container{Name: "holdfast-restore-wait", Args: []string{"restore-wait", "--restore-uid", "vr-1"}, SecurityContext: sc}
	}
	for _, tc := range []struct {
		name string
		pod  corev1.PodSpec
		want Owner
	}{
		{"the container's user and group", corev1.PodSpec{InitContainers: []corev1.Container{
			waiter(&corev1.SecurityContext{RunAsUser: ptr.To[int64](65534), RunAsGroup: ptr.To[int64](65534)})}},
			Owner{65534, 65534}},
		{"the container's user over the pod's", corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](3000)},
			InitContainers:  []corev1.Container{waiter(&corev1.SecurityContext{RunAsUser: ptr.To[int64](2000)})}},
			Owner{2000, 3000}},
		{"the pod's user", corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000)},
			InitContainers:  []corev1.Container{waiter(nil)}},
			Owner{1000, -1}},
		{"only a group: the image's user", corev1.PodSpec{
			InitContainers: []corev1.Container{waiter(&corev1.SecurityContext{RunAsGroup: ptr.To[int64](5)})}},
			UnknownOwner},
		{"restore-wait of another restore", corev1.PodSpec{InitContainers: []corev1.Container{
			{Name: "holdfast-restore-wait", Args: []string{"restore-wait", "--restore-uid", "vr-2"}, SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1)}}}},
			UnknownOwner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RunsAs(&corev1.Pod{Spec: tc.pod}, "vr-1"); got != tc.want {
				t.Errorf("RunsAs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Marked is how the agent releases a pod that comes to a claim after its restore
// ended: it finds the marker of that pod's restore-wait only where that restore-wait
// would accept it, and says which owner to write with so that the .holdfast of the
// claim, and the markers of the pods still waiting in it, are kept whenever this
// restore-wait can read it.
func TestMarked(t *testing.T) {
	requireRoot(t)
	reader := Owner{UID: 65534, GID: -1} // the pod sets the user only
	for _, tc := range []struct {
		name         string
		plant        func(t *testing.T, vol string)
		done, failed bool
		owner        Owner
		keeps        bool // writing with owner keeps the other pod's marker
	}{
		{name: "nothing yet", plant: func(*testing.T, string) {}, owner: reader},
		{name: "another pod's marker, directory of the same user", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-a", restoreWaitUser, ""))
		}, owner: restoreWaitUser, keeps: true},
		{name: "another pod's marker, root's directory", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-a", UnknownOwner, ""))
		}, owner: UnknownOwner, keeps: true},
		{name: "another pod's marker, directory of another user", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-a", Owner{UID: 1000, GID: 1000}, ""))
		}, owner: UnknownOwner},
		{name: "its done-marker", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-b", restoreWaitUser, ""))
		}, done: true, owner: restoreWaitUser},
		{name: "its failure marker", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-b", UnknownOwner, "snapshot gone"))
		}, failed: true, owner: UnknownOwner},
		{name: "its marker for another restore", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-2", "pod-b", restoreWaitUser, ""))
		}, owner: restoreWaitUser},
		{name: "a forged marker", plant: func(t *testing.T, vol string) {
			must(t, WriteMarkerFor(vol, "vr-1", "pod-a", restoreWaitUser, ""))
			forge(t, vol, MarkerName("vr-1", "pod-b"), 65534)
		}, owner: restoreWaitUser},
		{name: "a symlink", plant: func(t *testing.T, vol string) {
			dir := t.TempDir()
			must(t, WriteMarkerFor(dir, "vr-1", "pod-b", UnknownOwner, ""))
			must(t, os.Symlink(filepath.Join(dir, MarkerDir), filepath.Join(vol, MarkerDir)))
		}, owner: reader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			tc.plant(t, vol)
			done, failed, owner, err := Marked(vol, "vr-1", "pod-b", reader)
			if err != nil {
				t.Fatal(err)
			}
			if done != tc.done || failed != tc.failed || owner != tc.owner {
				t.Errorf("Marked = done %v failed %v owner %+v; want %v %v %+v", done, failed, owner, tc.done, tc.failed, tc.owner)
			}
			if tc.done || tc.failed {
				return
			}
			must(t, WriteMarkerFor(vol, "vr-1", "pod-b", owner, ""))
			if done, _, _, _ := Marked(vol, "vr-1", "pod-b", reader); !done {
				t.Error("the marker written with that owner is not found")
			}
			_, err = os.Lstat(filepath.Join(vol, MarkerDir, MarkerName("vr-1", "pod-a")))
			if tc.keeps && err != nil {
				t.Errorf("the marker of the pod still waiting is gone: %v", err)
			}
			runAs(t, 65534)
			if log, err := waitBrieflyFor(t, vol, "vr-1", "pod-b"); err != nil {
				t.Errorf("restore-wait of the pod: %v\n%s", err, log)
			}
		})
	}
}

// waitBrieflyFor is waitBriefly for the restore-wait of the pod with UID podUID.
func waitBrieflyFor(t *testing.T, vol, uid, podUID string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var log bytes.Buffer
	err := Wait(ctx, Options{Volumes: []string{vol}, RestoreUID: uid, PodUID: podUID, Interval: 10 * time.Millisecond, Log: &log})
	return log.String(), err
}
