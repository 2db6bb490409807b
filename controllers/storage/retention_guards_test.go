package storage

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// pinningRestore creates a PodVolumeRestore, not yet started, that reads b's snapshot,
// as the restore controller does once the target pod is scheduled.
func (f *retentionFixture) pinningRestore(name string, b v1.PodVolumeBackup) *v1.PodVolumeRestore {
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: v1.PodVolumeRestoreSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-2"}, Volume: "data",
			VolumeRestore: "restore-db", SnapshotID: b.Status.SnapshotID, PodVolumeBackup: b.Name, SourceNamespace: f.ns,
			SourcePath: b.Spec.SourcePath, StorageLocation: f.bsl.Name, Repository: f.brepo.Name, Uploader: v1.UploaderKopia},
	}
	create(f.t, pvr)
	return pvr
}

// eventOn waits for an event with reason on the object named name and returns it.
// gone fails the test early when what the event is about cannot happen any more.
func (f *retentionFixture) eventOn(name, reason string, gone func() error) corev1.Event {
	t := f.t
	t.Helper()
	var found corev1.Event
	eventually(t, 2*time.Minute, "a "+reason+" event on "+name, func() error {
		if gone != nil {
			if err := gone(); err != nil {
				t.Fatal(err)
			}
		}
		var events corev1.EventList
		if err := env.Client.List(ctxFor(t), &events, client.InNamespace(f.ns)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == reason && e.InvolvedObject.Name == name {
				found = e
				return nil
			}
		}
		return fmt.Errorf("no event yet")
	})
	return found
}

// stillThere fails when a PodVolumeBackup is gone or being deleted.
func (f *retentionFixture) stillThere(name string) func() error {
	return func() error {
		p := &v1.PodVolumeBackup{}
		if err := env.Client.Get(ctxFor(f.t), client.ObjectKey{Namespace: f.ns, Name: name}, p); err != nil {
			return fmt.Errorf("backup %s: %w", name, err)
		}
		if !p.DeletionTimestamp.IsZero() {
			return fmt.Errorf("backup %s is being deleted", name)
		}
		return nil
	}
}

// TestRetentionKeepsWhatARestoreReads (H7): with keepLast 1, a backup that a
// PodVolumeRestore not yet started reads is kept when a newer backup completes, and
// expired by the pass after the restore has ended.
func TestRetentionKeepsWhatARestoreReads(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 1, MaxExpirePercent: 50}, v1.DeletionRetain)
	b1 := f.backup(policy, "/pvc/orders", policy+"-b1", nil)
	pvr := f.pinningRestore("restore-db-data", b1)
	b2 := f.backup(policy, "/pvc/orders", policy+"-b2", nil)

	f.eventOn(b1.Name, ReasonRetentionPinned, f.stillThere(b1.Name))
	if err := f.stillThere(b1.Name)(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.snapshotIDs("/pvc/orders"), ids(b1, b2); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshots while the restore is pending = %v, want %v", got, want)
	}

	pvr.Status.Phase = v1.RunCompleted
	if err := env.Client.Status().Update(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "b1 to expire once the restore ended", func() error {
		if got := f.remaining(policy); !reflect.DeepEqual(got, []string{b2.Name}) {
			return fmt.Errorf("remaining = %v", got)
		}
		return nil
	})
	if got, want := f.snapshotIDs("/pvc/orders"), ids(b2); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshots after the restore = %v, want %v", got, want)
	}
}

// TestRetentionOrdersByServerTime (M6): a backup whose agent wrote a startTime a day
// ahead (a node clock ahead) does not count as the newest: keepLast 1 expires it, not
// the backup created after it.
func TestRetentionOrdersByServerTime(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	// The skewed backup is created first, and its name sorts first too (the order
	// among backups created within one second).
	skewed := f.backup(policy, "/pvc/orders", policy+"-a", func(st *v1.PodVolumeBackupStatus) {
		st.StartTime = &metav1.Time{Time: time.Now().Add(24 * time.Hour)}
	})
	later := f.backup(policy, "/pvc/orders", policy+"-b", func(st *v1.PodVolumeBackupStatus) {
		st.StartTime = &metav1.Time{Time: time.Now()}
	})
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 1, MaxExpirePercent: 50}, v1.DeletionRetain)
	eventually(t, 2*time.Minute, "the skewed backup to expire", func() error {
		if got := f.remaining(policy); !reflect.DeepEqual(got, []string{later.Name}) {
			if slices.Contains(got, skewed.Name) && !slices.Contains(got, later.Name) {
				t.Fatalf("retention expired %s, created after %s whose startTime is in the future", later.Name, skewed.Name)
			}
			return fmt.Errorf("remaining = %v", got)
		}
		return nil
	})
}

// TestEmptyBackupsDoNotRotateTheLastGoodOneOut (M6): after a backup with files, two
// backups of the same source with none are flagged FilesDropped with an event, and
// keepLast 1 keeps the backup with files besides the newest.
func TestEmptyBackupsDoNotRotateTheLastGoodOneOut(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	files := func(n int64) func(*v1.PodVolumeBackupStatus) {
		return func(st *v1.PodVolumeBackupStatus) { st.Progress = v1.Progress{TotalFiles: n, FilesDone: n} }
	}
	good := f.backup(policy, "/pvc/orders", policy+"-1", files(1200))
	f.backup(policy, "/pvc/orders", policy+"-2", files(0))
	empty2 := f.backup(policy, "/pvc/orders", policy+"-3", files(0))
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 1, MaxExpirePercent: 100}, v1.DeletionRetain)

	eventually(t, 2*time.Minute, "the first empty backup to expire", func() error {
		got := f.remaining(policy)
		if !slices.Contains(got, good.Name) {
			t.Fatalf("retention expired %s, the last backup with files (remaining %v)", good.Name, got)
		}
		if want := []string{good.Name, empty2.Name}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("remaining = %v, want %v", got, want)
		}
		return nil
	})
	p := &v1.PodVolumeBackup{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: f.ns, Name: empty2.Name}, p); err != nil {
		t.Fatal(err)
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1.ConditionFilesDropped)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonNoFiles {
		t.Fatalf("FilesDropped of %s = %+v, want True/NoFiles", empty2.Name, c)
	}
	if msg, dropped := DroppedFiles(p); !dropped || msg != c.Message {
		t.Errorf("DroppedFiles = %q, %v", msg, dropped)
	}
	f.eventOn(empty2.Name, ReasonFilesDropped, nil)
	f.eventOn(good.Name, ReasonKeptLastGood, nil)
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: f.ns, Name: good.Name}, p); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1.ConditionFilesDropped); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("FilesDropped of %s = %+v, want False", good.Name, c)
	}
}

// TestDeletingAPolicyWhoseStorageLocationIsGone (M7): a policy with deletionPolicy:
// Delete whose storage location was deleted first (a GitOps prune, an uninstall) is
// gone within a bounded time; its backup's snapshot stays in the store, named in a
// SnapshotKept event.
func TestDeletingAPolicyWhoseStorageLocationIsGone(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	b := f.backup(policy, "/pvc/orders", policy+"-1", nil)
	p := newPolicy(t, policy, f.bsl.Name, nil, v1.DeletionDelete)
	eventually(t, time.Minute, "the delete-backups finalizer", func() error {
		got := &v1.VolumeBackupPolicy{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(p), got); err != nil {
			return err
		}
		if len(got.Finalizers) == 0 {
			return fmt.Errorf("no finalizer yet")
		}
		return nil
	})
	if err := env.Client.Delete(ctxFor(t), f.bsl); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the storage location gone", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(f.bsl), &v1.BackupStorageLocation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	if err := env.Client.Delete(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	// The suite's SnapshotDeleteTimeout is 20s; the default is an hour.
	eventually(t, 2*time.Minute, "the policy gone", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(p), &v1.VolumeBackupPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("policy still there (%v)", err)
		}
		return nil
	})
	e := f.eventOn(b.Name, ReasonSnapshotKept, nil)
	if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, b.Status.SnapshotID) {
		t.Errorf("SnapshotKept event = %s %q, want a Warning naming snapshot %s", e.Type, e.Message, b.Status.SnapshotID)
	}
}

// TestAbandoningSnapshots (M7): a policy annotated backup.holdfast.dev/abandon-snapshots
// and deleted with deletionPolicy: Delete goes at once with its PodVolumeBackups,
// without touching the store: the snapshot stays, named in a SnapshotKept event.
func TestAbandoningSnapshots(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	b := f.backup(policy, "/pvc/orders", policy+"-1", nil)
	p := newPolicy(t, policy, f.bsl.Name, nil, v1.DeletionDelete)
	eventually(t, time.Minute, "the delete-backups finalizer", func() error {
		got := &v1.VolumeBackupPolicy{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(p), got); err != nil {
			return err
		}
		if len(got.Finalizers) == 0 {
			return fmt.Errorf("no finalizer yet")
		}
		patch := client.MergeFrom(got.DeepCopy())
		got.Annotations = map[string]string{AnnotationAbandonSnapshots: "true"}
		return env.Client.Patch(ctxFor(t), got, patch)
	})
	if err := env.Client.Delete(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the policy gone", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(p), &v1.VolumeBackupPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("policy still there (%v)", err)
		}
		return nil
	})
	e := f.eventOn(b.Name, ReasonSnapshotKept, nil)
	if !strings.Contains(e.Message, b.Status.SnapshotID) || !strings.Contains(e.Message, AnnotationAbandonSnapshots) {
		t.Errorf("SnapshotKept event = %q", e.Message)
	}
	if got, want := f.snapshotIDs("/pvc/orders"), ids(b); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshots = %v, want the abandoned one kept %v", got, want)
	}
}

// TestRetentionExpiresTheSnapshotOfAFailedBackup (L2): restic stores a snapshot when
// some files could not be read and the backup then ends Failed, and a backup whose
// final status write was lost ends Failed after an agent restart: either way the
// store holds a snapshot of the policy that no PodVolumeBackup records. Retention
// counts it with the source's backups and expires it in turn.
func TestRetentionExpiresTheSnapshotOfAFailedBackup(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	ns := &corev1.Namespace{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: f.ns}, ns); err != nil {
		t.Fatal(err)
	}
	rep, err := openAsClient(t, f.bsl, f.brepo, f.key)
	if err != nil {
		t.Fatal(err)
	}
	left, err := rep.Backup(ctxFor(t), repository.BackupRequest{Dir: sourceDir(t, map[string]string{"n": "failed"}), SourcePath: "/pvc/orders",
		Tags: map[string]string{identity.TagPolicy: policy, identity.TagNamespaceUID: string(ns.UID)}})
	if err != nil {
		t.Fatal(err)
	}
	failed := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: policy + "-0", Labels: map[string]string{v1.LabelPolicy: policy}},
		Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-1"}, Volume: "data",
			SourcePath: "/pvc/orders", StorageLocation: f.bsl.Name, Repository: f.brepo.Name, Uploader: v1.UploaderKopia},
	}
	create(t, failed)
	failed.Status = v1.PodVolumeBackupStatus{Phase: v1.RunFailed, Message: "agent restarted while the backup ran"}
	if err := env.Client.Status().Update(ctxFor(t), failed); err != nil {
		t.Fatal(err)
	}
	b1 := f.backup(policy, "/pvc/orders", policy+"-1", nil)
	b2 := f.backup(policy, "/pvc/orders", policy+"-2", nil)
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 2, MaxExpirePercent: 50}, v1.DeletionRetain)

	want := ids(b1, b2)
	eventually(t, 2*time.Minute, "the failed backup's snapshot to expire", func() error {
		if got := f.snapshotIDs("/pvc/orders"); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("snapshots = %v, want %v (not %s)", got, want, left.SnapshotID)
		}
		return nil
	})
}
