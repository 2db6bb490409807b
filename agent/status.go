package agent

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// work is a PodVolumeBackup or a PodVolumeRestore, as the status writes below see it.
type work[B any] interface {
	*B
	client.Object
}

// patchStatus merge-patches the status that mutate makes of a copy of obj. obj takes
// the result only when the patch lands, so a failed patch leaves it as the server
// has it and the next patch still carries every change (review L3).
func patchStatus[B any, P work[B]](ctx context.Context, c client.Client, obj P, mutate func(P), opts ...client.MergeFromOption) error {
	next := obj.DeepCopyObject().(P)
	mutate(next)
	if err := c.Status().Patch(ctx, next, client.MergeFromWithOptions(obj, opts...)); err != nil {
		return err
	}
	*obj = *next
	return nil
}

// finalStatusBackoff spaces the attempts at a final status write over about a minute:
// the outcome is what the run and the user read, and a lost Completed would have the
// next agent fail finished work and orphan its snapshot.
var finalStatusBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 8, Cap: 15 * time.Second}

// patchFinalStatus is patchStatus retried until it lands, the object is gone or ctx
// ends.
func patchFinalStatus[B any, P work[B]](ctx context.Context, c client.Client, obj P, mutate func(P)) error {
	return retry.OnError(finalStatusBackoff, func(err error) bool {
		return !apierrors.IsNotFound(err) && ctx.Err() == nil
	}, func() error {
		return patchStatus(ctx, c, obj, mutate)
	})
}

// claimAttempts bounds how often a claim is tried again after the object changed
// under it while it stayed Pending.
const claimAttempts = 5

// claimWork moves work from Pending to InProgress with the resourceVersion this agent
// last read (review L10): of two agents that both believe they serve the node (two
// DaemonSets, a stale NODE_NAME), one claims it and the other gets false and must not
// run it. claimable says whether a fresh read still leaves the work to be claimed.
func claimWork[B any, P work[B]](ctx context.Context, c client.Client, reader client.Reader, obj P, claimable func(P) bool, markInProgress func(P)) (bool, error) {
	for range claimAttempts {
		err := patchStatus(ctx, c, obj, markInProgress, client.MergeFromWithOptimisticLock{})
		if err == nil {
			return true, nil
		}
		if !apierrors.IsConflict(err) {
			return false, fmt.Errorf("claiming the work: %w", err)
		}
		// Changed since it was read: by another agent's claim, the user's cancel or a
		// status write of this agent's own that it has not seen yet.
		if err := reader.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if !claimable(obj) {
			return false, nil
		}
	}
	return false, fmt.Errorf("claiming the work: it kept changing over %d attempts", claimAttempts)
}

// isClaimable says whether work in this state may be claimed: Pending, not canceled,
// not being deleted.
func isClaimable(st workState) bool {
	return (st.phase == "" || st.phase == v1.RunPending) && !st.cancel && !st.deleting
}

// outcome is how a piece of work ends: its final phase, the reason of its condition,
// its one sentence and, when the mover ran, what it reported.
type outcome struct {
	phase  v1.RunPhase
	reason string
	msg    string
	res    *mover.Result
}

func failed(reason, msg string) outcome {
	return outcome{phase: v1.RunFailed, reason: reason, msg: msg}
}

func canceled(msg string) outcome {
	return outcome{phase: v1.RunCanceled, reason: reasonCanceled, msg: msg}
}

// reasonRepositoryLocked: the work found the repository locked (by maintenance: a
// prune or a forget) for longer than it waits, and is Pending again until it is tried
// again.
var reasonRepositoryLocked = repository.ErrLocked.Reason()

// moverOutcome is the outcome of a data mover run, the same for backups and restores:
// an error of the agent, a stop the agent asked for (stopReason, the pod went away), a
// cancel the user asked for, a repository lock that outlasted the wait (Pending: the
// work is tried again later), an error of the job, or success.
func moverOutcome(res mover.Result, err error, stopReason, canceledMsg, completedMsg string) outcome {
	o := outcome{res: &res}
	switch {
	case err != nil:
		o.phase, o.reason, o.msg = v1.RunFailed, reasonFailed, err.Error()
	case res.Canceled && stopReason != "":
		o.phase, o.reason, o.msg = v1.RunFailed, reasonFailed, stopReason
	case res.Canceled:
		o.phase, o.reason, o.msg = v1.RunCanceled, reasonCanceled, canceledMsg
	case res.Reason == reasonRepositoryLocked:
		o.phase, o.reason, o.msg = v1.RunPending, reasonRepositoryLocked, res.Error
	case res.Error != "":
		o.phase, o.reason, o.msg = v1.RunFailed, reasonFailed, res.Error
	default:
		o.phase, o.reason, o.msg = v1.RunCompleted, conditions.ReasonSucceeded, completedMsg
	}
	return o
}
