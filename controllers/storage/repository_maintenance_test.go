package storage

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// lockedRepository is a restic repository whose lock a long backup holds.
type lockedRepository struct{ fakeRepository }

func (*lockedRepository) Maintain(context.Context, repository.MaintenanceRequest) (repository.MaintenanceResult, error) {
	now := time.Now()
	return repository.MaintenanceResult{Mode: repository.MaintenancePrune, StartTime: now, CompletionTime: now}, repository.ErrLocked
}

// TestMaintenanceMeetingALockIsDeferred (review M11): a prune that meets a locked
// repository is recorded as Deferred, not Failed, does not count as the pass of its
// interval, and is tried again within minutes.
func TestMaintenanceMeetingALockIsDeferred(t *testing.T) {
	ctx := context.Background()
	rec := record.NewFakeRecorder(10)
	r := &RepositoryReconciler{Recorder: rec, Pool: NewPool(t.TempDir(), ""), maintenance: make(chan struct{}, 1)}
	last := metav1.NewTime(time.Now().Add(-2 * time.Hour))
	brepo := &v1.BackupRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "main-restic"},
		Spec:       v1.BackupRepositorySpec{Uploader: v1.UploaderRestic, MaintenanceInterval: &metav1.Duration{Duration: time.Hour}},
		Status:     v1.BackupRepositoryStatus{LastMaintenanceTime: &last},
	}
	res, err := r.maintain(ctx, brepo, &lockedRepository{})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != maintenanceDeferRetry {
		t.Errorf("requeue after %s, want %s", res.RequeueAfter, maintenanceDeferRetry)
	}
	if len(brepo.Status.Maintenance) != 1 || brepo.Status.Maintenance[0].Result != "Deferred" {
		t.Fatalf("maintenance history = %+v, want one Deferred pass", brepo.Status.Maintenance)
	}
	if !brepo.Status.LastMaintenanceTime.Equal(&last) {
		t.Errorf("lastMaintenanceTime = %s, want unchanged %s", brepo.Status.LastMaintenanceTime, last)
	}
	if e := <-rec.Events; e[:len("Normal MaintenanceDeferred")] != "Normal MaintenanceDeferred" {
		t.Errorf("event = %q", e)
	}
	// Still due: the next reconcile tries again rather than waiting an interval.
	res, _ = r.maintain(ctx, brepo, &lockedRepository{})
	if res.RequeueAfter != maintenanceDeferRetry || len(brepo.Status.Maintenance) != 2 {
		t.Errorf("second try: requeue %s, history %+v", res.RequeueAfter, brepo.Status.Maintenance)
	}
}
