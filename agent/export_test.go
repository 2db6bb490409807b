package agent

import (
	"context"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// BackupSteps drives single steps of the backup reconciler, as an agent of node,
// through c: for tests that need to reach one status write.
type BackupSteps struct{ r *PodVolumeBackupReconciler }

func NewBackupSteps(c client.Client, node string) BackupSteps {
	return BackupSteps{&PodVolumeBackupReconciler{Agent: &Agent{Client: c, apiReader: c,
		recorder: events.NewFakeRecorder(100), opts: Options{NodeName: node}}, jobs: newJobs(newSlots(1), priorityBackup)}}
}

// Reconcile is one reconcile of the backup; a test calls it only where it stops
// before a job starts.
func (s BackupSteps) Reconcile(ctx context.Context, key client.ObjectKey) error {
	_, err := s.r.Reconcile(ctx, ctrl.Request{NamespacedName: key})
	return err
}

// Claim is the Pending→InProgress claim an agent makes before it runs a backup.
func (s BackupSteps) Claim(ctx context.Context, pvb *v1.PodVolumeBackup) (bool, error) {
	return s.r.claim(ctx, pvb)
}

// Complete is the final status write of a backup that stored snapshot.
func (s BackupSteps) Complete(ctx context.Context, pvb *v1.PodVolumeBackup, snapshot string) error {
	return s.r.end(ctx, pvb, outcome{phase: v1.RunCompleted, reason: "Succeeded", msg: "snapshot " + snapshot + " stored",
		res: &mover.Result{SnapshotID: snapshot}})
}

// RestoreSteps drives single steps of the restore reconciler, as BackupSteps does.
type RestoreSteps struct{ r *PodVolumeRestoreReconciler }

func NewRestoreSteps(c client.Client, node string) RestoreSteps {
	return RestoreSteps{&PodVolumeRestoreReconciler{Agent: &Agent{Client: c, apiReader: c,
		recorder: events.NewFakeRecorder(100), opts: Options{NodeName: node}}, jobs: newJobs(newSlots(1), priorityRestore)}}
}

// Reconcile is one reconcile of the restore, as BackupSteps.Reconcile.
func (s RestoreSteps) Reconcile(ctx context.Context, key client.ObjectKey) error {
	_, err := s.r.Reconcile(ctx, ctrl.Request{NamespacedName: key})
	return err
}

// LockedOut records that the work of key found its repository locked, as a mover
// that met the lock does.
func (s BackupSteps) LockedOut(key client.ObjectKey)  { s.r.jobs.lockedOut(key, time.Now(), time.Hour) }
func (s RestoreSteps) LockedOut(key client.ObjectKey) { s.r.jobs.lockedOut(key, time.Now(), time.Hour) }

// LockWaits is how many lock waits the agent keeps.
func (s BackupSteps) LockWaits() int  { return s.r.jobs.lockWaits() }
func (s RestoreSteps) LockWaits() int { return s.r.jobs.lockWaits() }

func (j *jobs) lockWaits() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.locked)
}
