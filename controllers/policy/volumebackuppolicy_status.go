package policy

import (
	"fmt"
	"sort"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Failure reasons of a run: why a selected volume was not backed up.
const (
	// ReasonCreateFailed: the API server refused the volume's PodVolumeBackup or its
	// BackupRepository (a quota, an admission policy) until the creation window closed.
	ReasonCreateFailed = "CreateFailed"
	// ReasonBackupFailed: the PodVolumeBackup ended Failed.
	ReasonBackupFailed = "BackupFailed"
	// ReasonCanceled: the PodVolumeBackup was canceled.
	ReasonCanceled = "Canceled"
	// maxExampleLength bounds one example of a failure (<ns>/<pod>/<volume>: <message>).
	maxExampleLength = 1024
)

// runCounts is what a run's outcome is decided from. Every selected volume is in
// exactly one of backedUp, failed and pending; skipped volumes are not selected.
type runCounts struct {
	// selected is the number of volumes the run set out to back up.
	selected int32
	// backedUp is the number of its backups that completed.
	backedUp int32
	// failed is the number of its volumes not backed up: backups that failed or were
	// canceled, and volumes whose backup could not be created.
	failed int32
	// skipped is the number of volumes the selector picked that cannot be backed up.
	skipped int32
	// pending is the number of its backups not finished yet (a finished backup
	// whose pod's post hooks have not run yet is not finished).
	pending int32
	// hooksFailed is the number of hook runs with onError Fail that failed; firstHook
	// says which was first, in a sentence.
	hooksFailed int32
	firstHook   string
}

// runOutcome is the outcome of a run whose creation has ended. It is Succeeded only
// when every selected volume was backed up; a volume counted nowhere (its backup went
// away before it finished) is not backed up.
func runOutcome(c runCounts) v1.RunOutcome {
	switch {
	case c.pending > 0:
		return v1.RunOutcomeInProgress
	case c.selected == 0 && c.skipped > 0:
		return v1.RunOutcomeFailed // every volume skipped: nothing is protected
	case c.selected == 0:
		return v1.RunOutcomeSucceeded // nothing selected, nothing to back up
	case c.backedUp >= c.selected && c.hooksFailed == 0:
		return v1.RunOutcomeSucceeded
	case c.backedUp == 0:
		return v1.RunOutcomeFailed
	default:
		return v1.RunOutcomePartiallyFailed
	}
}

// runMessage says why an ended run did not back up every selected volume, or "".
func runMessage(c runCounts, failures []v1.RunFailures) string {
	if c.selected == 0 && c.skipped > 0 {
		return fmt.Sprintf("no volume was backed up: the %d selected volumes were all skipped (status.skipped says why)", c.skipped)
	}
	if c.backedUp >= c.selected {
		if c.hooksFailed > 0 {
			return fmt.Sprintf("every selected volume was backed up, but %d hooks with onError Fail failed; first: %s", c.hooksFailed, c.firstHook)
		}
		return ""
	}
	var why []string
	for _, f := range failures {
		why = append(why, fmt.Sprintf("%d %s", f.Count, f.Reason))
	}
	if missing := c.selected - c.backedUp - c.failed; missing > 0 {
		why = append(why, fmt.Sprintf("%d whose backup was deleted before it finished", missing))
	}
	msg := fmt.Sprintf("%d of %d selected volumes were not backed up: %s (status.lastRun.failures says which and why)",
		c.selected-c.backedUp, c.selected, strings.Join(why, ", "))
	if c.hooksFailed > 0 {
		msg = fmt.Sprintf("%d hooks with onError Fail failed, first: %s; %s", c.hooksFailed, c.firstHook, msg)
	}
	return msg
}

type runSum struct {
	total, completed, failed, unfinished int32
	// hooksFailed counts the failed hook runs with onError Fail, once per pod;
	// firstHook describes the first of them.
	hooksFailed int32
	firstHook   string
	bytes       int64
	lastDone    *metav1.Time
	// names are <namespace>/<name> of the run's backups.
	names map[string]bool
	// failures are <ns>/<pod>/<volume>: <message> by reason (BackupFailed, Canceled).
	failures map[string][]string
}

func summarize(pvbs []v1.PodVolumeBackup) runSum {
	s := runSum{names: map[string]bool{}, failures: map[string][]string{}}
	hooked := map[string]*v1.PodVolumeBackup{} // the backup of each hooked pod with the most outcomes
	for i := range pvbs {
		b := &pvbs[i]
		s.total++
		s.names[b.Namespace+"/"+b.Name] = true
		if b.Spec.Hooks != nil {
			pod := b.Namespace + "/" + b.Spec.Pod.UID
			if prev := hooked[pod]; prev == nil || len(b.Status.Hooks) > len(prev.Status.Hooks) {
				hooked[pod] = b
			}
			if finished(b.Status.Phase) && apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPostHooks) == nil {
				// The pod's post hooks run once all its volumes finished: the run
				// waits for them.
				s.unfinished++
				continue
			}
		}
		switch b.Status.Phase {
		case v1.RunCompleted:
			s.completed++
		case v1.RunFailed, v1.RunCanceled:
			s.failed++
			reason := ReasonBackupFailed
			if b.Status.Phase == v1.RunCanceled {
				reason = ReasonCanceled
			}
			if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPreHooks); c != nil && c.Status == metav1.ConditionFalse {
				reason = ReasonHookFailed
			}
			msg := b.Status.Message
			if why := b.Annotations[AnnotationCancelReason]; why != "" && b.Status.Phase == v1.RunCanceled {
				msg = why
			}
			s.failures[reason] = append(s.failures[reason], b.Namespace+"/"+b.Spec.Pod.Name+"/"+b.Spec.Volume+": "+msg)
		default:
			s.unfinished++
		}
		s.bytes += b.Status.BytesUploaded
		if t := b.Status.CompletionTime; t != nil && (s.lastDone == nil || t.After(s.lastDone.Time)) {
			s.lastDone = t
		}
	}
	pods := make([]string, 0, len(hooked))
	for pod := range hooked {
		pods = append(pods, pod)
	}
	sort.Strings(pods)
	for _, pod := range pods {
		b := hooked[pod]
		for _, h := range b.Status.Hooks {
			if h.Outcome != v1.HookFailed || h.OnError == v1.HookContinue {
				continue
			}
			s.hooksFailed++
			if s.firstHook == "" {
				s.firstHook = fmt.Sprintf("%s hook %s in container %s of pod %s/%s: %s",
					strings.ToLower(string(h.Stage)), h.Name, h.Container, b.Namespace, b.Spec.Pod.Name, h.Message)
			}
		}
	}
	return s
}

func finished(phase v1.RunPhase) bool {
	return phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled
}

// failuresOf is the count of one failure reason in the run's summary.
func failuresOf(run *v1.RunSummary, reason string) int32 {
	for _, f := range run.Failures {
		if f.Reason == reason {
			return f.Count
		}
	}
	return 0
}

// setFailures replaces the entry of reason with the given volumes (none removes it).
// Examples are the first few in name order, so the status does not churn.
func setFailures(failures []v1.RunFailures, reason string, vols []string) []v1.RunFailures {
	out := make([]v1.RunFailures, 0, len(failures)+1)
	for _, f := range failures {
		if f.Reason != reason {
			out = append(out, f)
		}
	}
	if len(vols) > 0 {
		sorted := append([]string(nil), vols...)
		sort.Strings(sorted)
		examples := make([]string, 0, maxExamples)
		for _, v := range sorted[:min(len(sorted), maxExamples)] {
			if len(v) > maxExampleLength {
				v = v[:maxExampleLength-3] + "..."
			}
			examples = append(examples, v)
		}
		out = append(out, v1.RunFailures{Reason: reason, Count: int32(len(vols)), Examples: examples})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	if len(out) == 0 {
		return nil
	}
	return out
}

// mergeFailures sets the failures of the run's backups (BackupFailed, Canceled,
// HookFailed) and keeps CreateFailed and InvalidHook, which only the create step knows.
func mergeFailures(failures []v1.RunFailures, backups map[string][]string) []v1.RunFailures {
	for _, reason := range []string{ReasonBackupFailed, ReasonCanceled, ReasonHookFailed} {
		failures = setFailures(failures, reason, backups[reason])
	}
	return failures
}
