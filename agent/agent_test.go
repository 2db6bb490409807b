package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls a condition for up to 4 minutes: a first kopia or restic backup of a
// 100 MiB tree on a loaded 2-core machine is slow, not stuck.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	if err := testenv.Poll(context.Background(), 4*time.Minute, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// volume is a pod with one emptyDir volume, in the API and on the node's disk.
type volume struct {
	ns, pod, name string
	uid           types.UID
	dir           string
}

// newVolume creates a running pod on node-1 with an emptyDir volume and makes the
// directory the kubelet would.
func newVolume(t *testing.T, ns, pod string) volume {
	t.Helper()
	return newVolumeWith(t, ns, pod, nil)
}

// newVolumeWith is newVolume with init containers, such as the webhook's restore-wait.
func newVolumeWith(t *testing.T, ns, pod string, inits []corev1.Container) volume {
	t.Helper()
	return newLabelledVolume(t, ns, pod, nil, inits)
}

// newLabelledVolume is newVolumeWith with pod labels, for a VolumeRestore to select.
func newLabelledVolume(t *testing.T, ns, pod string, labels map[string]string, inits []corev1.Container) volume {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:       nodeName,
			InitContainers: inits,
			Containers:     []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes:        []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(fx.kubeletRoot, "pods", string(p.UID), "volumes", "kubernetes.io~empty-dir", "data")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID))) })
	return volume{ns: ns, pod: pod, name: "data", uid: p.UID, dir: dir}
}

// writeTree fills dir with what volumes hold: nested directories, empty files, a
// 64 MiB file, symlinks inside and outside, hard links, a sparse file, private and
// executable modes.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"a/b/c", "emptydir", "private"} {
		must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	must(os.Chmod(filepath.Join(dir, "private"), 0o700))
	files := map[string]string{"a/b/c/deep.txt": "deep\n", "a/empty1": "", "a/b/empty2": "", "private/secret": "s3cr3t\n", "script.sh": "#!/bin/sh\necho hi\n"}
	for name, content := range files {
		must(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	must(os.Chmod(filepath.Join(dir, "private/secret"), 0o600))
	must(os.Chmod(filepath.Join(dir, "script.sh"), 0o755))

	big := make([]byte, 64<<20)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(big)
	must(os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644))

	must(os.Symlink("a/b/c/deep.txt", filepath.Join(dir, "link-rel")))
	must(os.Symlink("/etc/hostname", filepath.Join(dir, "link-abs")))
	must(os.Symlink("a", filepath.Join(dir, "link-dir")))
	must(os.WriteFile(filepath.Join(dir, "hard1"), []byte("linked twice\n"), 0o644))
	must(os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "hard2")))

	sparse, err := os.Create(filepath.Join(dir, "sparse.img"))
	must(err)
	must(sparse.Truncate(32 << 20))
	_, err = sparse.WriteAt([]byte("middle"), 16<<20)
	must(err)
	must(sparse.Close())

	old := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "a/b/c/deep.txt"), old, old))
}

// entry is what a restore must reproduce of one file system entry.
type entry struct {
	mode    fs.FileMode
	size    int64
	sum     [32]byte
	link    string
	modTime time.Time
}

// snapshotTree describes dir, skipping the .holdfast marker directory.
func snapshotTree(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == restorewait.MarkerDir {
			return filepath.SkipDir
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		e := entry{mode: info.Mode()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.link, _ = os.Readlink(path)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			e.size, e.sum, e.modTime = info.Size(), sha256.Sum256(data), info.ModTime()
		}
		if rel != "." {
			out[rel] = e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t *testing.T, want, got map[string]entry) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s is missing after the restore", name)
		case g.mode != w.mode:
			t.Errorf("%s: mode %v, want %v", name, g.mode, w.mode)
		case g.sum != w.sum || g.size != w.size:
			t.Errorf("%s: content differs (%d bytes, want %d)", name, g.size, w.size)
		case g.link != w.link:
			t.Errorf("%s: symlink to %q, want %q", name, g.link, w.link)
		case g.modTime.Sub(w.modTime).Abs() > time.Second:
			// restic's tar stream carries whole seconds, rounded.
			t.Errorf("%s: modified %v, want %v", name, g.modTime, w.modTime)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s appeared after the restore", name)
		}
	}
}

func ensureRepository(t *testing.T, ns, location string, uploader v1.Uploader) string {
	t.Helper()
	name := identity.RepositoryName(location, uploader)
	repo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: location, Uploader: uploader}}
	if err := env.Client.Create(ctxFor(t), repo); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "repository "+name+" Ready", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(repo), repo); err != nil {
			return err
		}
		if !conditions.IsReady(repo.Status.Conditions) {
			return fmt.Errorf("not ready: %v", repo.Status.Conditions)
		}
		return nil
	})
	return name
}

// createBackup creates a PodVolumeBackup (as the policy controller would), incremental
// to the snapshot parent when one is given.
func createBackup(t *testing.T, v volume, name, location, repo string, uploader v1.Uploader, parent ...string) *v1.PodVolumeBackup {
	t.Helper()
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v.ns, Labels: map[string]string{v1.LabelPolicy: "agent-test"}},
		Spec: v1.PodVolumeBackupSpec{Node: nodeName, Pod: v1.PodReference{Name: v.pod, UID: string(v.uid)}, Volume: v.name,
			SourcePath: "/deployment/app/data", StorageLocation: location, Repository: repo, Uploader: uploader},
	}
	if len(parent) > 0 {
		pvb.Spec.ParentSnapshotID = parent[0]
	}
	if err := env.Client.Create(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	return pvb
}

// createRestore creates a PodVolumeRestore (as the restore controller would) and its
// VolumeRestore unless the test made it.
func createRestore(t *testing.T, v volume, name, snapshot, location, repo string, uploader v1.Uploader, mutate ...func(*v1.PodVolumeRestoreSpec)) (*v1.PodVolumeRestore, types.UID) {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v.ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(vr), vr); err != nil {
		t.Fatal(err)
	}
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v.ns},
		Spec: v1.PodVolumeRestoreSpec{Node: nodeName, Pod: v1.PodReference{Name: v.pod, UID: string(v.uid)}, Volume: v.name,
			VolumeRestore: name, SnapshotID: snapshot, SourceNamespace: v.ns, SourcePath: "/deployment/app/data",
			StorageLocation: location, Repository: repo, Uploader: uploader},
	}
	for _, m := range mutate {
		m(&pvr.Spec)
	}
	if err := controllerutil.SetControllerReference(vr, pvr, env.Scheme); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	return pvr, vr.UID
}

func waitBackupPhase(t *testing.T, pvb *v1.PodVolumeBackup, phases ...v1.RunPhase) *v1.PodVolumeBackup {
	t.Helper()
	got := &v1.PodVolumeBackup{}
	waitFor(t, fmt.Sprintf("backup %s in %v", pvb.Name, phases), func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
			return err
		}
		for _, p := range phases {
			if got.Status.Phase == p {
				return nil
			}
		}
		return fmt.Errorf("phase %q: %s", got.Status.Phase, got.Status.Message)
	})
	return got
}

func waitRestorePhase(t *testing.T, pvr *v1.PodVolumeRestore, phases ...v1.RunPhase) *v1.PodVolumeRestore {
	t.Helper()
	got := &v1.PodVolumeRestore{}
	waitFor(t, fmt.Sprintf("restore %s in %v", pvr.Name, phases), func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvr), got); err != nil {
			return err
		}
		for _, p := range phases {
			if got.Status.Phase == p {
				return nil
			}
		}
		return fmt.Errorf("phase %q: %s", got.Status.Phase, got.Status.Message)
	})
	return got
}

// TestBackupAndRestore is the data path for both uploaders: a full backup, an
// incremental one after one file changed, and a restore that reproduces the tree
// byte for byte, into a volume where a symlink planted by the application points out
// of the volume.
func TestBackupAndRestore(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "minio", uploader)
			src := newVolume(t, ns, "app-1")
			writeTree(t, src.dir)
			want := snapshotTree(t, src.dir)

			first := waitBackupPhase(t, createBackup(t, src, "first", "minio", repo, uploader), v1.RunCompleted, v1.RunFailed)
			if first.Status.Phase != v1.RunCompleted {
				t.Fatalf("first backup %s: %s", first.Status.Phase, first.Status.Message)
			}
			st := first.Status
			if st.SnapshotID == "" || st.StartTime == nil || st.CompletionTime == nil || !conditions.IsReady(st.Conditions) {
				t.Errorf("first backup status incomplete: %+v", st)
			}
			if st.Progress.TotalBytes < 64<<20 || st.Progress.BytesDone != st.Progress.TotalBytes || st.Progress.TotalFiles < 8 {
				t.Errorf("first backup progress %+v: want at least the 64 MiB file and 8 files, all done", st.Progress)
			}
			if st.BytesUploaded < 60<<20 {
				t.Errorf("first backup uploaded %d bytes, want at least the 64 MiB of random data", st.BytesUploaded)
			}

			if err := os.WriteFile(filepath.Join(src.dir, "a/b/c/deep.txt"), []byte("deep, changed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// A page of the large file rewritten in place, as a database does.
			flipByte(t, filepath.Join(src.dir, "big.bin"), 40<<20)
			want = snapshotTree(t, src.dir)
			// The manager chooses a backup's parent (the policy controller); the agent
			// takes it from the spec.
			next := createBackup(t, src, "second", "minio", repo, uploader, st.SnapshotID)
			second := waitBackupPhase(t, next, v1.RunCompleted, v1.RunFailed)
			if second.Status.Phase != v1.RunCompleted {
				t.Fatalf("second backup %s: %s", second.Status.Phase, second.Status.Message)
			}
			if second.Status.ParentSnapshotID != st.SnapshotID {
				t.Errorf("second backup's parent %q, want the first snapshot %q", second.Status.ParentSnapshotID, st.SnapshotID)
			}
			// The small file and the chunk of big.bin around the changed byte (kopia's
			// chunks are 2–8 MiB, restic's 0.5–8 MiB).
			if up := second.Status.BytesUploaded; up > 9<<20 {
				t.Errorf("second backup uploaded %d bytes after changing one small file and a byte of a large one; want only the changes (< 9 MiB)", up)
			}
			// kopia takes the unchanged chunks of big.bin from the first snapshot unread.
			if r := second.Status.BytesReused; uploader == v1.UploaderKopia && r < 48<<20 || uploader == v1.UploaderRestic && r != 0 {
				t.Errorf("second backup reused %d bytes of big.bin: want all but the changed chunk with kopia, none with restic", r)
			}
			if uploader == v1.UploaderKopia && !strings.Contains(conditions.ReadyMessage(second.Status.Conditions), "bytes of changed large files reused") {
				t.Errorf("second backup's Ready condition does not say what was reused: %+v", second.Status.Conditions)
			}
			// The second backup ran on the cache the first one left for the repository.
			kept, _ := filepath.Glob(filepath.Join(fx.cacheDir(), string(uploader)+"-*", "*"))
			if len(kept) == 0 {
				t.Errorf("no %s repository cache kept in %s after two backups", uploader, fx.cacheDir())
			}

			vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "restore", Namespace: ns},
				Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
			if err := env.Client.Create(ctxFor(t), vr); err != nil {
				t.Fatal(err)
			}
			// The pod waits in restore-wait, as the webhook would have made it.
			dst := newVolumeWith(t, ns, "app-2", []corev1.Container{
				restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})})
			outside := t.TempDir()
			if err := os.Symlink(outside, filepath.Join(dst.dir, "a")); err != nil {
				t.Fatal(err)
			}
			pvr, restoreUID := createRestore(t, dst, "restore", second.Status.SnapshotID, "minio", repo, uploader)
			if restoreUID != vr.UID {
				t.Fatalf("restore uid %s, want %s", restoreUID, vr.UID)
			}
			done := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed)
			if done.Status.Phase != v1.RunCompleted {
				t.Fatalf("restore %s: %s", done.Status.Phase, done.Status.Message)
			}
			compareTrees(t, want, snapshotTree(t, dst.dir))
			// The restore's cache, on the cache volume, went with its job.
			if left, _ := filepath.Glob(filepath.Join(fx.cacheDir(), "restore-*")); len(left) != 0 {
				t.Errorf("restore caches left after the restore: %v", left)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("the restore wrote %d entries through the planted symlink, outside the volume", len(entries))
			}
			st2, err := os.Stat(filepath.Join(dst.dir, "sparse.img"))
			if err != nil {
				t.Fatal(err)
			}
			if allocated := st2.Sys().(*syscall.Stat_t).Blocks * 512; allocated >= st2.Size()/2 {
				t.Errorf("sparse.img takes %d bytes on disk for %d: not restored sparse", allocated, st2.Size())
			}
			marker := filepath.Join(dst.dir, restorewait.MarkerDir, restorewait.MarkerName(string(restoreUID), string(dst.uid)))
			if _, err := os.Stat(marker); err != nil {
				t.Errorf("no done-marker for restore-wait: %v", err)
			}
			if err := restorewait.Wait(ctxFor(t), restorewait.Options{Volumes: []string{dst.dir}, RestoreUID: string(restoreUID), PodUID: string(dst.uid)}); err != nil {
				t.Errorf("restore-wait on the restored volume: %v", err)
			}
			t.Logf("agent process after the %s round trip: %s", uploader, fx.agentMemory())
		})
	}
}

// TestCancelStopsABackupInFlight holds the upload in flight by freezing the store,
// cancels it, and expects Canceled with every earlier snapshot untouched.
func TestCancelStopsABackupInFlight(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	v := newVolume(t, ns, "app")
	if err := os.WriteFile(filepath.Join(v.dir, "f"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	earlier := waitBackupPhase(t, createBackup(t, v, "earlier", "minio", repo, v1.UploaderKopia), v1.RunCompleted)

	pauseStore(t)
	pvb := createBackup(t, v, "canceled", "minio", repo, v1.UploaderKopia)
	waitBackupPhase(t, pvb, v1.RunInProgress)
	patch := client.MergeFrom(pvb.DeepCopy())
	pvb.Spec.Cancel = true
	if err := env.Client.Patch(ctxFor(t), pvb, patch); err != nil {
		t.Fatal(err)
	}
	got := waitBackupPhase(t, pvb, v1.RunCanceled, v1.RunFailed, v1.RunCompleted)
	if got.Status.Phase != v1.RunCanceled || !strings.Contains(got.Status.Message, "spec.cancel") {
		t.Errorf("after cancel: phase %s, message %q", got.Status.Phase, got.Status.Message)
	}
	resumeStore(t)
	assertRestorable(t, ns, repo, earlier.Status.SnapshotID, v1.UploaderKopia)
}

// TestAgentRestartFailsTheInterruptedBackup kills the agent (and its data mover) in
// the middle of a backup; the agent that comes back must not leave it InProgress, and
// the next backup must succeed.
func TestAgentRestartFailsTheInterruptedBackup(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderRestic)
	v := newVolume(t, ns, "app")
	if err := os.WriteFile(filepath.Join(v.dir, "f"), []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	earlier := waitBackupPhase(t, createBackup(t, v, "earlier", "minio", repo, v1.UploaderRestic), v1.RunCompleted)

	pauseStore(t)
	pvb := createBackup(t, v, "interrupted", "minio", repo, v1.UploaderRestic)
	waitBackupPhase(t, pvb, v1.RunInProgress)
	fx.killAgent()
	resumeStore(t)
	if err := fx.startAgent(); err != nil {
		t.Fatal(err)
	}
	got := waitBackupPhase(t, pvb, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
	if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "agent restarted") {
		t.Errorf("interrupted backup: phase %s, message %q", got.Status.Phase, got.Status.Message)
	}
	next := waitBackupPhase(t, createBackup(t, v, "next", "minio", repo, v1.UploaderRestic), v1.RunCompleted, v1.RunFailed)
	if next.Status.Phase != v1.RunCompleted {
		t.Errorf("the backup after the restart: %s %s", next.Status.Phase, next.Status.Message)
	}
	assertRestorable(t, ns, repo, earlier.Status.SnapshotID, v1.UploaderRestic)
}

// TestPodDeletedMidBackupFailsOnlyThatBackup deletes the pod while its backup is in
// flight: that backup fails with the reason, the agent keeps working.
func TestPodDeletedMidBackupFailsOnlyThatBackup(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	v := newVolume(t, ns, "app")
	pauseStore(t)
	pvb := createBackup(t, v, "orphaned", "minio", repo, v1.UploaderKopia)
	waitBackupPhase(t, pvb, v1.RunInProgress)
	if err := env.Client.Delete(ctxFor(t), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: v.pod, Namespace: ns}}, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	got := waitBackupPhase(t, pvb, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
	resumeStore(t)
	if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "pod app was deleted") {
		t.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
	}
	if err := fx.agentRunning(); err != nil {
		t.Fatal(err)
	}
	other := newVolume(t, ns, "other")
	if next := waitBackupPhase(t, createBackup(t, other, "next", "minio", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed); next.Status.Phase != v1.RunCompleted {
		t.Errorf("the agent's next backup: %s %s", next.Status.Phase, next.Status.Message)
	}
}

// pauseStore freezes MinIO for the rest of the test (or until resumeStore).
func pauseStore(t *testing.T) {
	t.Helper()
	if err := fx.minio.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fx.minio.Resume() })
}

func resumeStore(t *testing.T) {
	t.Helper()
	if err := fx.minio.Resume(); err != nil {
		t.Fatal(err)
	}
}

// assertRestorable restores a snapshot into a fresh volume and expects it to complete.
func assertRestorable(t *testing.T, ns, repo, snapshot string, uploader v1.Uploader) {
	t.Helper()
	dst := newVolume(t, ns, fmt.Sprintf("check-%d", time.Now().UnixNano()%100000))
	pvr, _ := createRestore(t, dst, "check-"+dst.pod, snapshot, "minio", repo, uploader)
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunCompleted {
		t.Errorf("snapshot %s is not restorable: %s", snapshot, got.Status.Message)
	}
	// A data-only restore (no restore-wait in the pod) leaves no marker behind.
	if _, err := os.Stat(filepath.Join(dst.dir, restorewait.MarkerDir)); !os.IsNotExist(err) {
		t.Errorf("a data-only restore left %s in the volume (stat: %v)", restorewait.MarkerDir, err)
	}
}

// TestStoreGoneMidBackup takes MinIO away while a backup is in flight: the backup
// fails with a readable message, earlier snapshots stay restorable, and once the store
// is back the next backup succeeds.
func TestStoreGoneMidBackup(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "minio", uploader)
			v := newVolume(t, ns, "app")
			if err := os.WriteFile(filepath.Join(v.dir, "f"), []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			earlier := waitBackupPhase(t, createBackup(t, v, "earlier", "minio", repo, uploader), v1.RunCompleted)

			pauseStore(t)
			pvb := createBackup(t, v, "store-gone", "minio", repo, uploader)
			waitBackupPhase(t, pvb, v1.RunInProgress)
			fx.minio.Stop()
			t.Cleanup(func() { _ = fx.minio.Restart() })
			got := waitBackupPhase(t, pvb, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
			t.Logf("with the store gone: %s: %s", got.Status.Phase, got.Status.Message)
			if got.Status.Phase != v1.RunFailed || got.Status.Message == "" {
				t.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
			}
			if err := fx.minio.Restart(); err != nil {
				t.Fatal(err)
			}
			if next := waitBackupPhase(t, createBackup(t, v, "next", "minio", repo, uploader), v1.RunCompleted, v1.RunFailed); next.Status.Phase != v1.RunCompleted {
				t.Errorf("the backup after the store came back: %s %s", next.Status.Phase, next.Status.Message)
			}
			assertRestorable(t, ns, repo, earlier.Status.SnapshotID, uploader)
		})
	}
}

// flipByte changes the byte at off of the file at path in place and moves its time
// on, as a write a clock tick later would.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	later := st.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}
