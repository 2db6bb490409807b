package agent

import (
	"errors"
	"testing"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Every way a data mover run ends, and the phase it gives the work: a repository
// that stayed locked puts it back to Pending (review M11), any other error fails it.
func TestMoverOutcome(t *testing.T) {
	locked := mover.Result{Error: "The restic repository stayed locked", Reason: repository.ErrLocked.Reason()}
	for _, tc := range []struct {
		name       string
		res        mover.Result
		err        error
		stopReason string
		phase      v1.RunPhase
		reason     string
	}{
		{"completed", mover.Result{SnapshotID: "s1"}, nil, "", v1.RunCompleted, "Succeeded"},
		{"the agent failed", mover.Result{}, errors.New("no mover"), "", v1.RunFailed, reasonFailed},
		{"the user canceled", mover.Result{Canceled: true}, nil, "", v1.RunCanceled, reasonCanceled},
		{"the pod went away", mover.Result{Canceled: true}, nil, "pod gone", v1.RunFailed, reasonFailed},
		{"the job failed", mover.Result{Error: "bad key", Reason: repository.ErrWrongKey.Reason()}, nil, "", v1.RunFailed, reasonFailed},
		{"the repository stayed locked", locked, nil, "", v1.RunPending, "RepositoryLocked"},
		{"locked, but the pod went away", mover.Result{Canceled: true, Reason: locked.Reason}, nil, "pod gone", v1.RunFailed, reasonFailed},
	} {
		o := moverOutcome(tc.res, tc.err, tc.stopReason, "canceled", "done")
		if o.phase != tc.phase || o.reason != tc.reason {
			t.Errorf("%s: phase %s reason %s, want %s %s", tc.name, o.phase, o.reason, tc.phase, tc.reason)
		}
	}
}
