package agent

import (
	"context"

	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// BackupSteps drives single steps of the backup reconciler, as an agent of node,
// through c: for tests that need to reach one status write.
type BackupSteps struct{ r *PodVolumeBackupReconciler }

func NewBackupSteps(c client.Client, node string) BackupSteps {
	return BackupSteps{&PodVolumeBackupReconciler{Agent: &Agent{Client: c, apiReader: c,
		recorder: events.NewFakeRecorder(100), opts: Options{NodeName: node}}}}
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
