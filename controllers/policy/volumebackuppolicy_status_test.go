package policy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestRunOutcome is the table of run outcomes: Succeeded only when every selected
// volume was backed up.
func TestRunOutcome(t *testing.T) {
	tests := []struct {
		name string
		c    runCounts
		want v1.RunOutcome
		msg  string // a part of runMessage, "" for none
	}{
		{"nothing selected", runCounts{}, v1.RunOutcomeSucceeded, ""},
		{"all skipped", runCounts{skipped: 3}, v1.RunOutcomeFailed, "the 3 selected volumes were all skipped"},
		{"all backed up", runCounts{selected: 4, backedUp: 4}, v1.RunOutcomeSucceeded, ""},
		{"all backed up, some skipped", runCounts{selected: 4, backedUp: 4, skipped: 2}, v1.RunOutcomeSucceeded, ""},
		{"some still running", runCounts{selected: 4, backedUp: 3, pending: 1}, v1.RunOutcomeInProgress, ""},
		{"some stranded, some failed", runCounts{selected: 4, backedUp: 2, failed: 1, pending: 1}, v1.RunOutcomeInProgress, ""},
		{"some never created", runCounts{selected: 4, backedUp: 2, failed: 2}, v1.RunOutcomePartiallyFailed, "2 of 4 selected volumes were not backed up: 2 CreateFailed"},
		{"none created", runCounts{selected: 3, failed: 3}, v1.RunOutcomeFailed, "3 of 3 selected volumes were not backed up"},
		{"all failed", runCounts{selected: 2, failed: 2, skipped: 1}, v1.RunOutcomeFailed, "2 of 2"},
		{"a backup deleted before it finished", runCounts{selected: 2, backedUp: 1}, v1.RunOutcomePartiallyFailed, "1 whose backup was deleted"},
		// A failed hook with onError Fail: the run is never Succeeded (issue 19).
		{"all backed up, a post hook failed", runCounts{selected: 2, backedUp: 2, hooksFailed: 1, firstHook: "post hook thaw in container db of pod shop/db-0: exit 1"},
			v1.RunOutcomePartiallyFailed, "every selected volume was backed up, but 1 hooks with onError Fail failed; first: post hook thaw"},
		{"a pre hook failed, nothing backed up", runCounts{selected: 2, failed: 2, hooksFailed: 1, firstHook: "pre hook freeze in container db of pod shop/db-0: exit 1"},
			v1.RunOutcomeFailed, "1 hooks with onError Fail failed, first: pre hook freeze in container db of pod shop/db-0: exit 1; 2 of 2 selected volumes were not backed up: 2 CreateFailed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runOutcome(tt.c); got != tt.want {
				t.Errorf("runOutcome(%+v) = %s, want %s", tt.c, got, tt.want)
			}
			if tt.want == v1.RunOutcomeInProgress {
				return
			}
			var failures []v1.RunFailures
			if tt.c.failed > 0 {
				failures = []v1.RunFailures{{Reason: ReasonCreateFailed, Count: tt.c.failed}}
			}
			msg := runMessage(tt.c, failures)
			if (tt.msg == "") != (msg == "") || !strings.Contains(msg, tt.msg) {
				t.Errorf("runMessage = %q, want it to contain %q", msg, tt.msg)
			}
		})
	}
}

func TestSetFailuresIsBoundedAndSorted(t *testing.T) {
	var vols []string
	for _, c := range "gfedcba" {
		vols = append(vols, "ns/"+string(c)+"/v: "+strings.Repeat("x", 2000))
	}
	got := setFailures([]v1.RunFailures{{Reason: ReasonBackupFailed, Count: 1}}, ReasonCreateFailed, vols)
	if len(got) != 2 || got[0].Reason != ReasonBackupFailed || got[1].Reason != ReasonCreateFailed || got[1].Count != 7 {
		t.Fatalf("setFailures = %+v", got)
	}
	ex := got[1].Examples
	if len(ex) != maxExamples || !strings.HasPrefix(ex[0], "ns/a/v: ") || len(ex[0]) != maxExampleLength {
		t.Errorf("examples: %d, first %q (%d characters)", len(ex), ex[0][:10], len(ex[0]))
	}
	if got := setFailures(got, ReasonCreateFailed, nil); len(got) != 1 || got[0].Reason != ReasonBackupFailed {
		t.Errorf("removing CreateFailed left %+v", got)
	}
	if got := setFailures(nil, ReasonCreateFailed, nil); got != nil {
		t.Errorf("no failures gives %+v", got)
	}
}

func TestSummarizeFailures(t *testing.T) {
	done := metav1.Now()
	pvb := func(name string, phase v1.RunPhase, msg string) v1.PodVolumeBackup {
		return v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:   v1.PodVolumeBackupSpec{Pod: v1.PodReference{Name: "db-0"}, Volume: name},
			Status: v1.PodVolumeBackupStatus{Phase: phase, Message: msg, CompletionTime: &done}}
	}
	s := summarize([]v1.PodVolumeBackup{
		pvb("a", v1.RunCompleted, ""), pvb("b", v1.RunFailed, "no agent on node gone picked it up"),
		pvb("c", v1.RunCanceled, "canceled"), pvb("d", v1.RunPending, ""),
	})
	if s.total != 4 || s.completed != 1 || s.failed != 2 || s.unfinished != 1 || !s.names["shop/d"] {
		t.Errorf("summarize = %+v", s)
	}
	if f := s.failures[ReasonBackupFailed]; len(f) != 1 || f[0] != "shop/db-0/b: no agent on node gone picked it up" {
		t.Errorf("BackupFailed = %v", f)
	}
	if f := s.failures[ReasonCanceled]; len(f) != 1 {
		t.Errorf("Canceled = %v", f)
	}
}

// The run waits for a hooked pod's post hooks, counts a failed Fail hook once per pod
// (its outcomes are on every backup of the pod), not a failed Continue one, and
// counts the volumes a failed pre hook left out as HookFailed.
func TestSummarizeHooks(t *testing.T) {
	done := metav1.Now()
	hooks := &v1.ResolvedHooks{Pre: []v1.ResolvedHook{{Name: "freeze"}}}
	pvb := func(name, pod string, phase v1.RunPhase, conds []metav1.Condition, outs ...v1.HookOutcome) v1.PodVolumeBackup {
		return v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:   v1.PodVolumeBackupSpec{Pod: v1.PodReference{Name: pod, UID: pod + "-uid"}, Volume: name, Hooks: hooks},
			Status: v1.PodVolumeBackupStatus{Phase: phase, Message: "m", CompletionTime: &done, Conditions: conds, Hooks: outs}}
	}
	preFailed := metav1.Condition{Type: v1.ConditionPreHooks, Status: metav1.ConditionFalse, Reason: v1.ReasonHookFailed}
	post := metav1.Condition{Type: v1.ConditionPostHooks, Status: metav1.ConditionTrue}
	failedFreeze := v1.HookOutcome{Name: "freeze", Stage: v1.HookStagePre, Container: "db", Outcome: v1.HookFailed, OnError: v1.HookFail, Message: "exit 1: locked"}
	failedContinue := v1.HookOutcome{Name: "flush", Stage: v1.HookStagePre, Container: "db", Outcome: v1.HookFailed, OnError: v1.HookContinue}

	s := summarize([]v1.PodVolumeBackup{
		pvb("a", "db-0", v1.RunFailed, []metav1.Condition{preFailed, post}, failedFreeze),
		pvb("b", "db-0", v1.RunFailed, []metav1.Condition{preFailed, post}, failedFreeze),
		pvb("c", "db-1", v1.RunCompleted, []metav1.Condition{post}, failedContinue),
		pvb("d", "db-2", v1.RunCompleted, nil),
	})
	if s.completed != 1 || s.failed != 2 || s.unfinished != 1 {
		t.Errorf("completed %d, failed %d, unfinished %d; want 1, 2 and 1 (d waits for its post hooks)", s.completed, s.failed, s.unfinished)
	}
	if s.hooksFailed != 1 || s.firstHook != "pre hook freeze in container db of pod shop/db-0: exit 1: locked" {
		t.Errorf("hooksFailed %d, first %q", s.hooksFailed, s.firstHook)
	}
	if f := s.failures[ReasonHookFailed]; len(f) != 2 {
		t.Errorf("HookFailed = %v, want both volumes of db-0", f)
	}
}
