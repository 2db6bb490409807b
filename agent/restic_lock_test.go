package agent_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestRepositoryLockedByMaintenanceIsRetriedNotFailed is review M11: a restic backup,
// and a restore that restore-wait holds a pod for, that meet the repository locked
// exclusively (as the manager's prune or forget holds it) for longer than they wait
// go back to Pending with the reason RepositoryLocked, not Failed, and restore-wait
// gets no failure marker; once the lock is gone both are tried again and complete.
//
// The lock is held by "restic key passwd", which locks the repository exclusively and
// then reads the new password from stdin until it closes (as in
// internal/repository/restic_lock_test.go). The test agent's restic waits
// testResticLockWait for a lock.
func TestRepositoryLockedByMaintenanceIsRetriedNotFailed(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderRestic)
	src := newVolume(t, ns, "app-1")
	if err := os.WriteFile(filepath.Join(src.dir, "orders.db"), []byte("42 orders\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := waitBackupPhase(t, createBackup(t, src, "first", "fs", repo, v1.UploaderRestic), v1.RunCompleted, v1.RunFailed)
	if first.Status.Phase != v1.RunCompleted {
		t.Fatalf("first backup %s: %s", first.Status.Phase, first.Status.Message)
	}

	release := holdExclusiveLock(t, ns, repo)
	defer release()

	second := createBackup(t, src, "second", "fs", repo, v1.UploaderRestic, first.Status.SnapshotID)
	held := newHeldPod(t, ns, "held", []string{"data"}, "data")
	pvr := heldRestore(held, "data", repo, func(p *v1.PodVolumeRestore) {
		p.Spec.SnapshotID, p.Spec.Uploader = first.Status.SnapshotID, v1.UploaderRestic
	})
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(held.dirs["data"], restorewait.MarkerDir, restorewait.MarkerName(string(held.vr.UID), string(held.uid))+restorewait.FailedSuffix)

	waitLocked := func(obj client.Object, status func() (v1.RunPhase, []metav1.Condition, string)) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%s Pending again with reason RepositoryLocked", obj.GetName()), func() error {
			if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(obj), obj); err != nil {
				return err
			}
			phase, conds, msg := status()
			if phase == v1.RunFailed || phase == v1.RunCompleted {
				t.Fatalf("%s ended %s while the repository was locked: %s", obj.GetName(), phase, msg)
			}
			c := apimeta.FindStatusCondition(conds, v1.ConditionReconciling)
			if phase != v1.RunPending || c == nil || c.Reason != repository.ErrLocked.Reason() {
				return fmt.Errorf("phase %q, conditions %v", phase, conds)
			}
			return nil
		})
	}
	waitLocked(second, func() (v1.RunPhase, []metav1.Condition, string) {
		return second.Status.Phase, second.Status.Conditions, second.Status.Message
	})
	waitLocked(pvr, func() (v1.RunPhase, []metav1.Condition, string) {
		return pvr.Status.Phase, pvr.Status.Conditions, pvr.Status.Message
	})
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Errorf("a restore that waits for a lock wrote restore-wait's failure marker (stat: %v)", err)
	}
	waitFor(t, "a RepositoryLocked event on backup "+second.Name, func() error {
		var list eventsv1.EventList
		if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == repository.ErrLocked.Reason() && e.Regarding.Name == second.Name {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})

	release()
	if got := waitBackupPhase(t, second, v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunCompleted {
		t.Errorf("second backup after the lock: %s: %s", got.Status.Phase, got.Status.Message)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunCompleted {
		t.Errorf("restore after the lock: %s: %s", got.Status.Phase, got.Status.Message)
	}
	if b, err := os.ReadFile(filepath.Join(held.dirs["data"], "orders.db")); err != nil || string(b) != "42 orders\n" {
		t.Errorf("restored orders.db = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(held.dirs["data"], restorewait.MarkerDir, restorewait.MarkerName(string(held.vr.UID), string(held.uid)))); err != nil {
		t.Errorf("no done marker for restore-wait: %v", err)
	}
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Errorf("restore-wait got a failure marker (stat: %v)", err)
	}
}

// holdExclusiveLock locks the restic repository repo of ns exclusively, as a prune
// does, until the returned function is called (or the test ends).
func holdExclusiveLock(t *testing.T, ns, repo string) func() {
	t.Helper()
	key := &corev1.Secret{}
	if err := env.Client.Get(ctxFor(t), types.NamespacedName{Namespace: operatorNamespace, Name: repository.KeySecretName(ns, repo)}, key); err != nil {
		t.Fatal(err)
	}
	location := filepath.Join(fx.fsStore, string(v1.UploaderRestic), ns)
	locks := filepath.Join(location, "locks")
	waitFor(t, "no restic lock left by the first backup", func() error {
		if n := countEntries(t, locks); n > 0 {
			return fmt.Errorf("%d locks", n)
		}
		return nil
	})
	holder := exec.Command(filepath.Join(testenv.ToolsBin(), "restic"), "key", "passwd")
	home := t.TempDir()
	holder.Env = []string{"RESTIC_REPOSITORY=" + location, "RESTIC_PASSWORD=" + string(key.Data[repository.KeySecretKey]),
		"HOME=" + home, "RESTIC_CACHE_DIR=" + filepath.Join(home, "cache"), "PATH=/usr/local/bin:/usr/bin:/bin"}
	holder.Stdout, holder.Stderr = io.Discard, io.Discard
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = stdin.Close()
			_ = holder.Wait()
		}
	}
	t.Cleanup(release)
	waitFor(t, "restic key passwd holding the repository's lock", func() error {
		if countEntries(t, locks) == 0 {
			return fmt.Errorf("no lock yet")
		}
		return nil
	})
	return release
}

func countEntries(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open(dir)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return len(names)
}
