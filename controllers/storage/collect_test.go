package storage

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func TestFailedToCollect(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	created := metav1.NewTime(now.Add(-10 * 24 * time.Hour))
	b := func(name, source string, phase v1.RunPhase, ended time.Duration) v1.PodVolumeBackup {
		p := v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, CreationTimestamp: created},
			Spec:   v1.PodVolumeBackupSpec{Repository: "r", SourcePath: source},
			Status: v1.PodVolumeBackupStatus{Phase: phase}}
		if ended != 0 {
			p.Status.CompletionTime = &metav1.Time{Time: now.Add(-ended)}
		}
		return p
	}
	ttl := 72 * time.Hour
	for _, tc := range []struct {
		name string
		pvbs []v1.PodVolumeBackup
		want []string
		next time.Duration
	}{
		{"nothing", nil, nil, 0},
		{"the newest failed one of a source stays", []v1.PodVolumeBackup{b("a", "/a", v1.RunFailed, 100*time.Hour)}, nil, 0},
		{"older failed and canceled ones go after the ttl", []v1.PodVolumeBackup{
			b("a1", "/a", v1.RunFailed, 100*time.Hour), b("a2", "/a", v1.RunCanceled, 80*time.Hour),
			b("a3", "/a", v1.RunFailed, 70*time.Hour), b("a4", "/a", v1.RunFailed, time.Hour),
			b("b1", "/b", v1.RunFailed, 100*time.Hour)}, []string{"a1", "a2"}, 2 * time.Hour},
		{"completed ones are retention's", []v1.PodVolumeBackup{
			b("a1", "/a", v1.RunCompleted, 100*time.Hour), b("a2", "/a", v1.RunCompleted, 90*time.Hour)}, nil, 0},
		{"a completion time ahead of the server counts from creation", []v1.PodVolumeBackup{
			b("a1", "/a", v1.RunFailed, -24*time.Hour), b("a2", "/a", v1.RunFailed, -25*time.Hour)}, []string{"a1"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, next := failedToCollect(tc.pvbs, ttl, now)
			var got []string
			for _, p := range due {
				got = append(got, p.Name)
			}
			if !reflect.DeepEqual(got, tc.want) || next != tc.next {
				t.Errorf("failedToCollect = %v, %s; want %v, %s", got, next, tc.want, tc.next)
			}
		})
	}
}

// TestFailedBackupsAreCollected (L2): Failed and Canceled backups older than the
// default FinishedTTL are deleted, except the newest failed one of each source, which
// still shows the last failure.
func TestFailedBackupsAreCollected(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	policy := uniqueName(t, "vbp")
	newPolicy(t, policy, "nowhere", nil, v1.DeletionRetain)
	longAgo := &metav1.Time{Time: time.Now().Add(-4 * 24 * time.Hour)}
	failed := func(name, source string, phase v1.RunPhase, ended *metav1.Time) {
		p := &v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{v1.LabelPolicy: policy}},
			Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-1"}, Volume: "data",
				SourcePath: source, StorageLocation: "nowhere", Repository: "nowhere-kopia", Uploader: v1.UploaderKopia},
		}
		create(t, p)
		p.Status = v1.PodVolumeBackupStatus{Phase: phase, Message: "the volume could not be read", CompletionTime: ended}
		if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		failed(fmt.Sprintf("orders-%d", i), "/pvc/orders", v1.RunFailed, longAgo)
	}
	failed("orders-6", "/pvc/orders", v1.RunCanceled, longAgo)
	failed("orders-7", "/pvc/orders", v1.RunFailed, &metav1.Time{Time: time.Now()})
	failed("other-1", "/pvc/other", v1.RunFailed, longAgo)

	eventually(t, 2*time.Minute, "the old failed backups to be deleted", func() error {
		var list v1.PodVolumeBackupList
		if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var got []string
		for _, p := range list.Items {
			if p.DeletionTimestamp.IsZero() {
				got = append(got, p.Name)
			}
		}
		if want := []string{"orders-7", "other-1"}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("remaining = %v, want %v", got, want)
		}
		return nil
	})
}

// TestEndedRestoresAreCollected (L2): a PodVolumeRestore that ended longer ago than
// the default FinishedTTL, whose VolumeRestore is gone, is deleted.
func TestEndedRestoresAreCollected(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "restore-db-data", Labels: map[string]string{v1.LabelRestore: "restore-db"}},
		Spec: v1.PodVolumeRestoreSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-2"}, Volume: "data",
			VolumeRestore: "restore-db", SnapshotID: "k0123", SourceNamespace: ns, StorageLocation: "nowhere", Repository: "nowhere-kopia", Uploader: v1.UploaderKopia},
	}
	create(t, pvr)
	pvr.Status = v1.PodVolumeRestoreStatus{Phase: v1.RunCompleted, CompletionTime: &metav1.Time{Time: time.Now().Add(-4 * 24 * time.Hour)}}
	if err := env.Client.Status().Update(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the ended restore to be deleted", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvr), &v1.PodVolumeRestore{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}
