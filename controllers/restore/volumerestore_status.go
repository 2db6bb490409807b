package restore

import (
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
)

// maxVolumeStatuses bounds status.volumes (the API allows 256).
const maxVolumeStatuses = 256

// maxMessage bounds status.volumes[].message (the API allows 1024 bytes).
const maxMessage = 1024

// restoreTally is what one pass found, volume by volume: the input of the status.
type restoreTally struct {
	// volumes is one entry per (pod, volume), sorted, failed, skipped and restored.
	volumes                             []v1.RestoreVolumeStatus
	completed, failed, running, skipped int32
	// failures say why each failed volume failed.
	failures []string
	// unscheduled counts the pods the restore will restore into that have no node yet.
	unscheduled int
	// toCome counts the pods that StatefulSets it restores have still to create.
	toCome int
	// waitReason and waitMessage say why nothing is restored yet (waitingMessage).
	waitReason, waitMessage string
	// claimOf is the claim each PodVolumeRestore restores, by name.
	claimOf map[string]string
	// claims says that the restore restores claims (spec.claimSelector): its
	// messages count claims, and unscheduled counts the claims it waits for.
	claims bool
}

// tallyRestores counts the PodVolumeRestores of a restore with the volumes that have
// none: missing (a volume the restore names but cannot restore: failed) and skipped (a
// volume of a pod restore-wait does not hold). served are the volumes of pods whose
// claim another pod's PodVolumeRestore restores: each is listed with that restore's
// phase, and counted once, as that PodVolumeRestore (a claim is one volume restored,
// however many pods mount it).
func tallyRestores(existing []v1.PodVolumeRestore, missing, skipped, served []v1.RestoreVolumeStatus, unscheduled int) restoreTally {
	t := restoreTally{unscheduled: unscheduled, claimOf: map[string]string{}}
	t.volumes = append(t.volumes, missing...)
	t.volumes = append(t.volumes, skipped...)
	byName := map[string]*v1.PodVolumeRestore{}
	for i := range existing {
		byName[existing[i].Name] = &existing[i]
	}
	for _, st := range served {
		st.Phase = v1.RunPending
		if pvr := byName[st.PodVolumeRestore]; pvr != nil {
			st.SnapshotID = pvr.Spec.SnapshotID
			st.Paths, st.SubPath = statusPaths(pvr)
			if pvr.Status.Phase != "" {
				st.Phase = pvr.Status.Phase
			}
			if pvr.Status.Message != "" && (st.Phase == v1.RunFailed || st.Phase == v1.RunCanceled) {
				st.Message += ": " + pvr.Status.Message
			}
			st.Message = boundMessage(st.Message)
		}
		t.volumes = append(t.volumes, st)
	}
	for _, pvr := range existing {
		t.claimOf[pvr.Name] = pvr.Annotations[annotationClaim]
		st := v1.RestoreVolumeStatus{Pod: pvr.Spec.Pod.Name, Volume: pvr.Spec.Volume, PodVolumeRestore: pvr.Name,
			SnapshotID: pvr.Spec.SnapshotID, Phase: pvr.Status.Phase, Message: volumeMessage(&pvr)}
		st.Paths, st.SubPath = statusPaths(&pvr)
		if st.Phase == "" {
			st.Phase = v1.RunPending
		}
		switch st.Phase {
		case v1.RunCompleted:
			t.completed++
		case v1.RunFailed, v1.RunCanceled:
			t.failed++
			t.failures = append(t.failures, fmt.Sprintf("%s/%s: %s", st.Pod, st.Volume, st.Message))
		default:
			t.running++
		}
		t.volumes = append(t.volumes, st)
	}
	for _, m := range missing {
		t.failed++
		t.failures = append(t.failures, m.Message)
	}
	t.skipped = int32(len(skipped))
	sort.Slice(t.volumes, func(i, j int) bool {
		if t.volumes[i].Pod != t.volumes[j].Pod {
			return t.volumes[i].Pod < t.volumes[j].Pod
		}
		return t.volumes[i].Volume < t.volumes[j].Volume
	})
	sort.Strings(t.failures)
	return t
}

// volumeMessage is the message of a restored volume in status.volumes: the
// PodVolumeRestore's, after the planner's note when it restores a backup flagged
// FilesDropped. It is bounded as the API bounds it.
func volumeMessage(pvr *v1.PodVolumeRestore) string {
	msg := pvr.Status.Message
	if note := pvr.Annotations[annotationFlaggedBackup]; note != "" {
		if msg != "" {
			note += "; " + msg
		}
		msg = note
	}
	return boundMessage(msg)
}

// boundMessage cuts msg to maxMessage bytes with "..." at the end, never inside a
// character: a status is JSON, which carries only valid UTF-8.
func boundMessage(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	return strings.ToValidUTF8(msg[:maxMessage-3], "") + "..."
}

// restorePhase is the phase of a restore from its counts. Skipped volumes do not count:
// the restore never meant to write them.
//
//	nothing to restore, before the pending deadline   Pending
//	nothing to restore, past it                       Expired
//	a volume still running, a pod to restore into     InProgress
//	  not scheduled yet, or a StatefulSet pod to come
//	every volume restored                             Completed
//	every volume failed                               Failed
//	some restored, some failed                        PartiallyFailed
func restorePhase(t restoreTally, pastDeadline bool) v1.RestorePhase {
	total := t.completed + t.failed + t.running
	switch {
	case total == 0 && pastDeadline:
		return v1.RestoreExpired
	case total == 0:
		return v1.RestorePending
	case t.running > 0 || t.unscheduled > 0 || t.toCome > 0:
		return v1.RestoreInProgress
	case t.failed == 0:
		return v1.RestoreCompleted
	case t.completed == 0:
		return v1.RestoreFailed
	}
	return v1.RestorePartiallyFailed
}

// setRestoreStatus writes a tally into vr's status at time now: counts, status.volumes,
// phase, the conditions and the completion time. Sets Ready when every volume is
// restored; Stalled when some failed or the restore expired (only a new restore can
// change that); Reconciling while it waits for pods or volumes.
func setRestoreStatus(vr *v1.VolumeRestore, t restoreTally, now time.Time) {
	st := &vr.Status
	volumes := t.volumes
	if len(volumes) > maxVolumeStatuses {
		volumes = volumes[:maxVolumeStatuses]
	}
	st.Volumes = volumes
	st.VolumesCompleted, st.VolumesFailed, st.VolumesSkipped = t.completed, t.failed, t.skipped
	total := t.completed + t.failed + t.running
	st.VolumesTotal = total

	deadline := vr.PendingDeadlineOf()
	st.Phase = restorePhase(t, !now.Before(deadline))
	gen := vr.Generation
	switch st.Phase {
	case v1.RestorePending:
		conditions.MarkReconciling(&st.Conditions, gen, t.waitReason, t.waitMessage)
	case v1.RestoreExpired:
		conditions.MarkStalled(&st.Conditions, gen, ReasonExpired, fmt.Sprintf(
			"expired: nothing was restored within spec.pendingDeadline (%s after creation); it holds and restores no pod any more (%s)",
			deadline.Sub(vr.CreationTimestamp.Time), t.waitMessage))
	case v1.RestoreInProgress:
		msg := fmt.Sprintf("%d of %d volume(s) restored", t.completed, total)
		switch {
		case t.claims && t.unscheduled > 0:
			msg += "; " + t.waitMessage
		case t.unscheduled > 0:
			msg += fmt.Sprintf("; waiting for %d pod(s) to be scheduled", t.unscheduled)
		}
		if t.toCome > 0 {
			msg += fmt.Sprintf("; waiting for %d more pod(s) of its StatefulSets to be created", t.toCome)
		}
		conditions.MarkReconciling(&st.Conditions, gen, ReasonRestoring, msg+skippedNote(t))
	case v1.RestoreCompleted:
		msg := fmt.Sprintf("restored %d volume(s) of %d pod(s)", t.completed, restoredPods(volumes))
		if t.claims {
			msg = fmt.Sprintf("restored %d claim(s)", t.completed)
		}
		conditions.MarkReady(&st.Conditions, gen, ReasonRestored, msg+skippedNote(t))
	default:
		msg := fmt.Sprintf("%d of %d volume(s) could not be restored: %s", t.failed, total, strings.Join(first(t.failures, 3), "; "))
		conditions.MarkStalled(&st.Conditions, gen, ReasonRestoreFailed, msg+skippedNote(t))
	}
	if st.Phase.IsFinal() && st.CompletionTime == nil {
		at := metav1.NewTime(now)
		st.CompletionTime = &at
	}
}

// skippedNote adds the skipped volumes to a message about the restored ones.
func skippedNote(t restoreTally) string {
	if t.skipped == 0 {
		return ""
	}
	if t.claims {
		return fmt.Sprintf("; left %d claim(s) that running pods use as they are (ClaimInUse)", t.skipped)
	}
	return fmt.Sprintf("; left %d volume(s) of running pods as they are (spec.runningPods: Skip)", t.skipped)
}

// restoredPods counts the pods that have a volume restored or being restored.
func restoredPods(vols []v1.RestoreVolumeStatus) int {
	seen := map[string]bool{}
	for _, v := range vols {
		if v.Reason == "" {
			seen[v.Pod] = true
		}
	}
	return len(seen)
}

// statusPaths is what status.volumes says a volume's restore gives back, and where.
func statusPaths(pvr *v1.PodVolumeRestore) ([]string, string) {
	var paths []string
	for _, p := range pvr.Spec.Paths {
		paths = append(paths, string(p))
	}
	return paths, string(pvr.Spec.SubPath)
}
