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
