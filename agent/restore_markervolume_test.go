package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// restoreWaitUID is the user restore-wait runs as by default: no capabilities, no
// access to a volume root only its owner may read.
const restoreWaitUID = 65534

// newMarkedPod is newHeldPod as the webhook makes the pod now: restore-wait reads its
// markers in the pod's marker volume, which only it mounts. The marker volume's
// directory is made as the kubelet makes an emptyDir (0777); dirs has it under the
// marker volume's name. mutate may change the pod before it is created.
func newMarkedPod(t *testing.T, ns, name string, volumes []string, mounted []string, mutate func(*corev1.Pod)) (heldPod, string) {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	for _, v := range volumes {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	markers := restorewait.NextMarkerVolumeName(p)
	p.Spec.Volumes = append(p.Spec.Volumes, restorewait.MarkerVolume(markers))
	p.Spec.InitContainers = []corev1.Container{restorewait.Container(restorewait.ContainerName, string(vr.UID), volumes, markers, 0,
		corev1.Container{Image: "holdfast"})}
	if mutate != nil {
		mutate(p)
	}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodPending
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID))) })
	h := heldPod{volume: volume{ns: ns, pod: name, name: volumes[0], uid: p.UID}, vr: vr, dirs: map[string]string{}}
	for _, v := range append([]string{markers}, mounted...) {
		dir := filepath.Join(fx.kubeletRoot, "pods", string(p.UID), "volumes", "kubernetes.io~empty-dir", v)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		h.dirs[v] = dir
	}
	return h, h.dirs[markers]
}

// runRestoreWait runs the holdfast binary's restore-wait as the unprivileged user
// restore-wait runs as, for the held pod's volumes, with its marker volume at
// markerDir (as --marker-dir; the volumes' mount paths are those of the pod, which do
// not exist here: restore-wait must not need them).
func runRestoreWait(t *testing.T, h heldPod, markerDir string, volumes ...string) (string, error) {
	t.Helper()
	return runRestoreWaitOf(t, h.vr, h.uid, markerDir, volumes...)
}

// runRestoreWaitOf is runRestoreWait for the pod with UID podUID held for vr.
func runRestoreWaitOf(t *testing.T, vr *v1.VolumeRestore, podUID types.UID, markerDir string, volumes ...string) (string, error) {
	t.Helper()
	searchableByAll(t, markerDir, fx.moverBinary)
	args := []string{"restore-wait", "--restore-uid", string(vr.UID), "--marker-dir", markerDir,
		"--poll-interval", "50ms", "--deadline", "20s"}
	for _, v := range volumes {
		args = append(args, "--volume", restorewait.MountPath(v))
	}
	ctx, cancel := context.WithTimeout(ctxFor(t), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, fx.moverBinary, args...)
	cmd.Env = []string{restorewait.EnvPodUID + "=" + string(podUID)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: restoreWaitUID, Gid: restoreWaitUID}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// searchableByAll lets every user reach paths (as a pod's mounts are reachable in its
// containers): the test's directories above them, private to root, get o+x until
// the test ends.
func searchableByAll(t *testing.T, paths ...string) {
	t.Helper()
	top := filepath.Dir(fx.kubeletRoot)
	for _, p := range paths {
		for d := filepath.Dir(p); strings.HasPrefix(d, top) && d != filepath.Dir(top); d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode().Perm(); mode&0o001 == 0 {
				if err := os.Chmod(d, mode|0o001); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = os.Chmod(d, mode) })
			}
		}
	}
}

// The bug the e2e fidelity story found: a volume whose root only its owner may read
// (postgres makes its data directory 0700, uid 999) kept restore-wait, which opened
// the root to find its marker, in Init:CrashLoopBackOff for ever while the restore was
// Completed, and the marker's .holdfast changed the restored root. Now the agent
// writes the marker into the pod's marker volume: restore-wait, unprivileged, finds it
// there, and the restored root is exactly the backed-up one.
func TestRestoreReleasesAPodWhoseVolumeRootOnlyItsOwnerReads(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	src := newVolume(t, ns, "src")
	if err := os.WriteFile(filepath.Join(src.dir, "PG_VERSION"), []byte("17\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(src.dir, "PG_VERSION"), src.dir} {
		if err := os.Chown(p, 999, 999); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(src.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	backup := waitBackupPhase(t, createBackup(t, src, "pgdata", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed)
	if backup.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup: %s", backup.Status.Message)
	}

	h, markers := newMarkedPod(t, ns, "db", []string{"data"}, []string{"data"}, nil)
	pvr := heldRestore(h, "data", repo, func(p *v1.PodVolumeRestore) { p.Spec.SnapshotID = backup.Status.SnapshotID })
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed, v1.RunCanceled); got.Status.Phase != v1.RunCompleted {
		t.Fatalf("restore %s: %s", got.Status.Phase, got.Status.Message)
	}

	data := h.dirs["data"]
	root := stat(t, data)
	if root.Uid != 999 || root.Mode&0o7777 != 0o700 {
		t.Fatalf("restored root: uid %d mode %04o, want the backed-up 999, 0700", root.Uid, root.Mode&0o7777)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "PG_VERSION" {
		t.Errorf("the restored volume holds %v, want only the backed-up PG_VERSION (no %s)", entries, restorewait.MarkerDir)
	}
	marker := filepath.Join(markers, restorewait.VolumeMarkerName(string(h.vr.UID), "data"))
	if st := stat(t, marker); st.Uid != 0 || st.Mode&0o7777 != 0o644 {
		t.Errorf("marker: uid %d mode %04o, want root's 0644", st.Uid, st.Mode&0o7777)
	}
	if st := stat(t, markers); st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("marker volume: uid %d mode %04o, want root's 0755", st.Uid, st.Mode&0o7777)
	}

	// The test's volume root is one the unprivileged user cannot open, as on a node.
	searchableByAll(t, data)
	ls := exec.Command("ls", data)
	ls.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: restoreWaitUID, Gid: restoreWaitUID}}
	if out, err := ls.CombinedOutput(); err == nil {
		t.Fatalf("uid %d can list the restored root (%s): the test does not show what it means to", restoreWaitUID, out)
	}
	out, err := runRestoreWait(t, h, markers, "data")
	if err != nil || !strings.Contains(out, "every volume restored") {
		t.Fatalf("restore-wait as uid %d: %v\n%s", restoreWaitUID, err, out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("restore-wait removed its marker from the marker volume: %v", err)
	}
}

// A restore that fails tells restore-wait why through the marker volume, also when the
// restored volume itself could not take a marker: mounted read-only (a pod waiting
// only for it used to wait for its deadline).
func TestRestoreFailureReachesRestoreWaitThroughTheMarkerVolume(t *testing.T) {
	testenv.Require(t, env)
	for _, tc := range []struct {
		name    string
		mounted []string
		mutate  func(*corev1.Pod)
		want    string
	}{
		{"its snapshot is not in the repository", []string{"data"}, nil, ""},
		{"its volume is mounted read-only", []string{"data"}, func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}
		}, "mounted read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
			h, markers := newMarkedPod(t, ns, "app", []string{"data"}, tc.mounted, tc.mutate)
			pvr := heldRestore(h, "data", repo, nil)
			if err := env.Client.Create(ctxFor(t), pvr); err != nil {
				t.Fatal(err)
			}
			got := waitRestorePhase(t, pvr, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
			if got.Status.Phase != v1.RunFailed || got.Status.Message == "" || !strings.Contains(got.Status.Message, tc.want) {
				t.Errorf("phase %s, message %q; want Failed, %q", got.Status.Phase, got.Status.Message, tc.want)
			}
			want := tc.want
			if want == "" {
				want = got.Status.Message[:min(40, len(got.Status.Message))]
			}
			b, err := os.ReadFile(filepath.Join(markers, restorewait.VolumeMarkerName(string(h.vr.UID), "data")+restorewait.FailedSuffix))
			if err != nil || !strings.Contains(string(b), want) {
				t.Errorf("failure marker %q, %v; want the reason %q", b, err, want)
			}
			out, err := runRestoreWait(t, h, markers, "data")
			if err == nil || !strings.Contains(out, want) || strings.Contains(out, "deadline") {
				t.Errorf("restore-wait as uid %d: %v, want it to fail at once with the reason\n%s", restoreWaitUID, err, out)
			}
			if dir := h.dirs["data"]; dir != "" {
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("the volume holds %d entries after the failed restore, want none", len(entries))
				}
			}
		})
	}
}

// A claim that several held pods mount is restored once; the agent that restored it
// writes the marker of every such pod on its node into that pod's own marker volume,
// under the name the pod gives the claim, and nothing into the claim. A pod on another
// node is its own node's agent's to release.
func TestOneRestoreOfASharedClaimReleasesThePodsOfItsNode(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	backup := sharedDataBackup(t, ns, repo)
	pv := sharedClaim(t, ns, "shared")
	onClaim := func(node string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.NodeName = node
			p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"}}
		}
	}
	a, aMarkers := newMarkedPod(t, ns, "a", []string{"data"}, nil, onClaim(nodeName))
	// The same restore holds the other pods: as the webhook makes them, with its UID.
	sharerOf := func(name, volume, node string) (*corev1.Pod, string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
				Volumes: []corev1.Volume{{Name: volume, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"}}}}}}
		markers := restorewait.NextMarkerVolumeName(p)
		p.Spec.Volumes = append(p.Spec.Volumes, restorewait.MarkerVolume(markers))
		p.Spec.InitContainers = []corev1.Container{restorewait.Container(restorewait.ContainerName, string(a.vr.UID), []string{volume}, markers, 0,
			corev1.Container{Image: "holdfast"})}
		if err := env.Client.Create(ctxFor(t), p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID))) })
		dir := filepath.Join(fx.kubeletRoot, "pods", string(p.UID), "volumes", "kubernetes.io~empty-dir", markers)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		return p, dir
	}
	b, bMarkers := sharerOf("b", "shared-files", nodeName)
	_, cMarkers := sharerOf("c", "data", "node-2")
	dir := filepath.Join(fx.kubeletRoot, "pods", string(a.uid), "volumes", "kubernetes.io~cephfs", pv)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	pvr := heldRestore(a, "data", repo, func(p *v1.PodVolumeRestore) { p.Spec.SnapshotID = backup.Status.SnapshotID })
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed, v1.RunCanceled); got.Status.Phase != v1.RunCompleted {
		t.Fatalf("restore %s: %s", got.Status.Phase, got.Status.Message)
	}
	out, err := runRestoreWait(t, a, aMarkers, "data")
	if err != nil {
		t.Errorf("restore-wait of pod a: %v\n%s", err, out)
	}
	bHeld := heldPod{volume: volume{ns: ns, pod: b.Name, name: "shared-files", uid: b.UID}, vr: a.vr}
	if out, err := runRestoreWait(t, bHeld, bMarkers, "shared-files"); err != nil {
		t.Errorf("restore-wait of pod b, on the same node: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(cMarkers); len(entries) != 0 {
		t.Errorf("the marker volume of pod c, on another node, holds %d entries; its node's agent writes it", len(entries))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "shared.txt" {
		t.Errorf("the claim holds %v, want only the restored shared.txt", entries)
	}
}

// stat is the owner and mode of path, not following a symlink.
func stat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// A pod that comes to a shared claim after the claim's restore ended is released by
// its own node's agent through its marker volume: with the restore's outcome, whatever
// the claim's root allows restore-wait's user, and with nothing written into the claim.
func TestAPodThatComesLaterIsReleasedThroughItsMarkerVolume(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	x := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: types.UID("x-uid")}}
	for _, tc := range []struct {
		name  string
		phase v1.RunPhase
		why   string
	}{
		{"restored on another node", v1.RunCompleted, ""},
		{"failed on another node", v1.RunFailed, "snapshot 0123456789abcdef is gone from the store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claim := strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			pv := sharedClaim(t, ns, claim)
			vr := newRestore(t, ns, claim)
			// The claim's one restore ran on node-2, for another pod.
			endedElsewhere(t, claimRestore(vr, x, "node-2", "data", claim, repo), tc.phase, tc.why)
			late := newHeldOn(t, ns, "late-"+claim, nodeName, hold{vr: vr, claims: map[string]string{"data": claim}, markers: true})
			dir := mountClaim(t, late, pv)
			// A database's data directory: restore-wait's user may not open it.
			if err := os.Chown(dir, 999, 999); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			markers := filepath.Join(fx.kubeletRoot, "pods", string(late.UID), "volumes", "kubernetes.io~empty-dir", restorewait.MarkerVolumeName)
			if err := os.MkdirAll(markers, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(markers, 0o777); err != nil {
				t.Fatal(err)
			}
			marker := filepath.Join(markers, restorewait.VolumeMarkerName(string(vr.UID), "data"))
			if tc.why != "" {
				marker += restorewait.FailedSuffix
			}
			waitFor(t, "the marker in the late pod's marker volume", func() error {
				_, err := os.Lstat(marker)
				return err
			})
			out, err := runRestoreWaitOf(t, vr, late.UID, markers, "data")
			switch {
			case tc.why == "" && err != nil:
				t.Errorf("restore-wait of the late pod: %v\n%s", err, out)
			case tc.why != "" && (err == nil || !strings.Contains(out, tc.why)):
				t.Errorf("restore-wait of the late pod: %v, want the restore's reason %q\n%s", err, tc.why, out)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("the claim holds %d entries, want nothing of the marker", len(entries))
			}
		})
	}
}

// The kubelet sets up a pod's volumes side by side: a restore whose marker volume is
// not there yet waits for it (Pending, saying so) instead of ending with no way to
// tell restore-wait, and ends once the kubelet has made it.
func TestARestoreWaitsForTheMarkerVolume(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	src := newVolume(t, ns, "src")
	if err := os.WriteFile(filepath.Join(src.dir, "a"), []byte("alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	backup := waitBackupPhase(t, createBackup(t, src, "early", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed)
	if backup.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup: %s", backup.Status.Message)
	}
	h, markers := newMarkedPod(t, ns, "early", []string{"data"}, []string{"data"}, nil)
	if err := os.Remove(markers); err != nil { // the kubelet has not made it yet
		t.Fatal(err)
	}
	pvr := heldRestore(h, "data", repo, func(p *v1.PodVolumeRestore) { p.Spec.SnapshotID = backup.Status.SnapshotID })
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	got := &v1.PodVolumeRestore{}
	waitFor(t, "the restore waiting for the marker volume", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvr), got); err != nil {
			return err
		}
		if got.Status.Phase != v1.RunPending || !strings.Contains(got.Status.Message, "in which restore-wait reads how the restore ended") {
			return fmt.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
		}
		return nil
	})
	if err := os.Mkdir(markers, 0o777); err != nil {
		t.Fatal(err)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed, v1.RunCanceled); got.Status.Phase != v1.RunCompleted {
		t.Fatalf("restore %s: %s", got.Status.Phase, got.Status.Message)
	}
	if _, err := os.Stat(filepath.Join(markers, restorewait.VolumeMarkerName(string(h.vr.UID), "data"))); err != nil {
		t.Errorf("no done-marker in the marker volume: %v", err)
	}
}
