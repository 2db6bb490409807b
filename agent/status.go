package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
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

// backToPendingLocked puts work that found its repository locked by maintenance for
// longer than it waits back to Pending, with a condition and a Warning event that say
// so; it is tried again after a wait that doubles each time (jobs.lockedOut, the
// Reconcile gate). noun is "backup" or "restore"; pending writes the Pending phase, the
// message and the Reconciling condition into the kind's status.
func backToPendingLocked[B any, P work[B]](ctx context.Context, a *Agent, j *jobs, obj P, noun string, pending func(o P, msg string)) {
	wait := j.lockedOut(client.ObjectKeyFromObject(obj), time.Now(), a.opts.LockedRetry)
	msg := fmt.Sprintf("the repository stayed locked by maintenance (a prune or a forget) for longer than the %[1]s waits; "+
		"the %[1]s is Pending again and is tried again in %[2]s", noun, wait)
	log := ctrl.LoggerFrom(ctx)
	if err := patchFinalStatus(ctx, a.Client, obj, func(o P) { pending(o, msg) }); err != nil {
		log.Error(err, "putting the "+noun+" back to Pending after a repository lock")
	}
	action := strings.ToUpper(noun[:1]) + noun[1:]
	a.recorder.Eventf(obj, nil, corev1.EventTypeWarning, reasonRepositoryLocked, action, "%s", msg)
	log.Info("repository locked; "+noun+" Pending again", "retryIn", wait)
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

// toSkipped is what a backup's status says it left out; nil when nothing.
func toSkipped(s *mover.Skipped) *v1.SkippedEntries {
	if s == nil || *s == (mover.Skipped{}) {
		return nil
	}
	return &v1.SkippedEntries{Vanished: s.Vanished, ChangedType: s.ChangedType, Sockets: s.Sockets, FIFOs: s.FIFOs, Devices: s.Devices,
		CacheDirectories: s.CacheDirectories}
}

// toNotRestored is what a restore's status says it did not give back; nil when
// nothing.
func toNotRestored(n *mover.NotRestored) *v1.NotRestoredEntries {
	if n == nil || *n == (mover.NotRestored{}) {
		return nil
	}
	return &v1.NotRestoredEntries{FIFOs: n.FIFOs, Devices: n.Devices, Attributes: n.Attributes, Other: n.Other}
}

// countList names the non-zero counts, in order: "2 vanished, 1 socket".
func countList(counts ...count) string {
	var parts []string
	for _, c := range counts {
		switch {
		case c.n == 1:
			parts = append(parts, "1 "+c.one)
		case c.n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.many))
		}
	}
	return strings.Join(parts, ", ")
}

// count is one count of countList with its noun in the singular and the plural.
type count struct {
	n         int64
	one, many string
}

// skippedEvent is the event type and the sentence for what a Completed backup left
// out, ok false when it left nothing out. Entries that went away or changed while
// read are what a live volume does (Normal); a FIFO or a device node the user had is
// not in the snapshot (Warning). Sockets are Normal: no uploader stores them and
// their owner makes them again. Cache directories are Normal: the policy asked to
// leave their contents out (spec.files.excludeCaches).
func skippedEvent(s *v1.SkippedEntries) (eventType, msg string, ok bool) {
	if s == nil {
		return "", "", false
	}
	eventType = corev1.EventTypeNormal
	if s.FIFOs > 0 || s.Devices > 0 {
		eventType = corev1.EventTypeWarning
	}
	return eventType, "the snapshot left out " + countList(
		count{s.Vanished, "entry that vanished while read", "entries that vanished while read"},
		count{s.ChangedType, "entry that changed type while read", "entries that changed type while read"},
		count{s.Sockets, "socket", "sockets"},
		count{s.FIFOs, "FIFO", "FIFOs"},
		count{s.Devices, "device node", "device nodes"},
		count{s.CacheDirectories, "cache directory's contents (spec.files.excludeCaches)", "cache directories' contents (spec.files.excludeCaches)"},
	) + " (status.skipped)", true
}

// notRestoredEvent is the event type and the sentence for what a Completed restore
// did not give back, ok false when it gave everything back: a Warning when a FIFO, a
// device node or an attribute the snapshot held is missing, Normal for sockets alone.
func notRestoredEvent(n *v1.NotRestoredEntries) (eventType, msg string, ok bool) {
	if n == nil {
		return "", "", false
	}
	eventType = corev1.EventTypeNormal
	if n.FIFOs > 0 || n.Devices > 0 || n.Attributes > 0 {
		eventType = corev1.EventTypeWarning
	}
	return eventType, "the restore did not give back " + countList(
		count{n.FIFOs, "FIFO", "FIFOs"},
		count{n.Devices, "device node", "device nodes"},
		count{n.Attributes, "extended attribute", "extended attributes"},
		count{n.Other, "other entry (socket)", "other entries (sockets)"},
	) + " (status.notRestored)", true
}
