package restore

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func pvrIn(pod, volume string, phase v1.RunPhase, msg string) v1.PodVolumeRestore {
	return v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: pod + "-" + volume},
		Spec:       v1.PodVolumeRestoreSpec{Pod: v1.PodReference{Name: pod}, Volume: volume, SnapshotID: "k1"},
		Status:     v1.PodVolumeRestoreStatus{Phase: phase, Message: msg},
	}
}

func skippedVolume(pod, volume string) v1.RestoreVolumeStatus {
	return v1.RestoreVolumeStatus{Pod: pod, Volume: volume, Reason: ReasonPodNotHeld, Message: "not restored"}
}

// Every edge of a restore's outcome: nothing to restore (before and after the
// deadline), only skipped volumes, volumes running or waiting for a pod, all
// restored, all failed, some of each.
func TestSetRestoreStatus(t *testing.T) {
	created := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	before, after := created.Add(30*time.Minute), created.Add(2*time.Hour)
	missing := v1.RestoreVolumeStatus{Pod: "a", Volume: "named", Phase: v1.RunFailed, Message: "volume named of pod a: no completed backup"}
	for _, tc := range []struct {
		name        string
		existing    []v1.PodVolumeRestore
		missing     []v1.RestoreVolumeStatus
		skipped     []v1.RestoreVolumeStatus
		unscheduled int
		toCome      int
		now         time.Time

		phase                         v1.RestorePhase
		total, done, failed, nSkipped int32
		condition                     string // the condition that is True
		reason                        string
		message                       string
		completed                     bool
	}{
		{name: "nothing yet", now: before,
			phase: v1.RestorePending, condition: v1.ConditionReconciling, reason: ReasonWaitingForPods, message: "waiting"},
		{name: "nothing by the deadline", now: after,
			phase: v1.RestoreExpired, condition: v1.ConditionStalled, reason: ReasonExpired, message: "spec.pendingDeadline (1h0m0s after creation)", completed: true},
		{name: "only skipped volumes stay Pending", skipped: []v1.RestoreVolumeStatus{skippedVolume("a", "data")}, now: before,
			phase: v1.RestorePending, nSkipped: 1, condition: v1.ConditionReconciling, reason: ReasonWaitingForPods},
		{name: "only skipped volumes expire", skipped: []v1.RestoreVolumeStatus{skippedVolume("a", "data")}, now: after,
			phase: v1.RestoreExpired, nSkipped: 1, condition: v1.ConditionStalled, reason: ReasonExpired, completed: true},
		{name: "a held pod not scheduled yet keeps it Pending", unscheduled: 1, now: before,
			phase: v1.RestorePending, condition: v1.ConditionReconciling, reason: ReasonWaitingForPods},
		{name: "running", existing: []v1.PodVolumeRestore{pvrIn("a", "data", "", ""), pvrIn("b", "data", v1.RunCompleted, "")}, now: before,
			phase: v1.RestoreInProgress, total: 2, done: 1, condition: v1.ConditionReconciling, reason: ReasonRestoring, message: "1 of 2 volume(s) restored"},
		{name: "restored, a held pod still to schedule", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunCompleted, "")}, unscheduled: 1, now: after,
			phase: v1.RestoreInProgress, total: 1, done: 1, condition: v1.ConditionReconciling, message: "waiting for 1 pod(s) to be scheduled"},
		{name: "restored, a StatefulSet pod still to be created", existing: []v1.PodVolumeRestore{pvrIn("db-0", "data", v1.RunCompleted, "")}, toCome: 2, now: before,
			phase: v1.RestoreInProgress, total: 1, done: 1, condition: v1.ConditionReconciling, message: "waiting for 2 more pod(s) of its StatefulSets to be created"},
		{name: "started restores finish past the deadline", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunInProgress, "")}, now: after,
			phase: v1.RestoreInProgress, total: 1, condition: v1.ConditionReconciling},
		{name: "all restored", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunCompleted, ""), pvrIn("a", "cache", v1.RunCompleted, "")}, now: before,
			phase: v1.RestoreCompleted, total: 2, done: 2, condition: v1.ConditionReady, reason: ReasonRestored, message: "restored 2 volume(s) of 1 pod(s)", completed: true},
		{name: "all restored, some skipped", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunCompleted, "")},
			skipped: []v1.RestoreVolumeStatus{skippedVolume("old", "data")}, now: before,
			phase: v1.RestoreCompleted, total: 1, done: 1, nSkipped: 1, condition: v1.ConditionReady,
			message: "restored 1 volume(s) of 1 pod(s); left 1 volume(s) of running pods as they are (spec.runningPods: Skip)", completed: true},
		{name: "all failed", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunFailed, "snapshot gone"), pvrIn("b", "data", v1.RunCanceled, "canceled")}, now: before,
			phase: v1.RestoreFailed, total: 2, failed: 2, condition: v1.ConditionStalled, reason: ReasonRestoreFailed,
			message: "2 of 2 volume(s) could not be restored: a/data: snapshot gone; b/data: canceled", completed: true},
		{name: "a named volume without backup", existing: []v1.PodVolumeRestore{pvrIn("a", "data", v1.RunCompleted, "")}, missing: []v1.RestoreVolumeStatus{missing}, now: before,
			phase: v1.RestorePartiallyFailed, total: 2, done: 1, failed: 1, condition: v1.ConditionStalled, message: "no completed backup", completed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "r", Generation: 2, CreationTimestamp: metav1.NewTime(created)}}
			tally := tallyRestores(tc.existing, tc.missing, tc.skipped, nil, tc.unscheduled)
			tally.toCome = tc.toCome
			tally.waitReason, tally.waitMessage = ReasonWaitingForPods, "waiting for pods matching spec.podSelector"
			setRestoreStatus(vr, tally, tc.now)
			st := vr.Status
			if st.Phase != tc.phase || st.VolumesTotal != tc.total || st.VolumesCompleted != tc.done || st.VolumesFailed != tc.failed || st.VolumesSkipped != tc.nSkipped {
				t.Errorf("phase %s total %d done %d failed %d skipped %d; want %s %d %d %d %d",
					st.Phase, st.VolumesTotal, st.VolumesCompleted, st.VolumesFailed, st.VolumesSkipped, tc.phase, tc.total, tc.done, tc.failed, tc.nSkipped)
			}
			if n := len(tc.existing) + len(tc.missing) + len(tc.skipped); len(st.Volumes) != n {
				t.Errorf("%d entries in status.volumes, want %d", len(st.Volumes), n)
			}
			c := apimeta.FindStatusCondition(st.Conditions, tc.condition)
			if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 2 {
				t.Fatalf("condition %s not True at generation 2: %+v", tc.condition, st.Conditions)
			}
			if tc.reason != "" && c.Reason != tc.reason {
				t.Errorf("reason %s, want %s", c.Reason, tc.reason)
			}
			if !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q, want it to say %q", c.Message, tc.message)
			}
			if (st.CompletionTime != nil) != tc.completed || st.Phase.IsFinal() != tc.completed {
				t.Errorf("completionTime %v, final %v; want ended = %v", st.CompletionTime, st.Phase.IsFinal(), tc.completed)
			}
		})
	}
}

func TestPendingDeadlineDefaults(t *testing.T) {
	created := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
	if got := vr.PendingDeadlineOf(); !got.Equal(created.Add(v1.DefaultPendingDeadline)) {
		t.Errorf("deadline %s without spec.pendingDeadline", got)
	}
	vr.Spec.PendingDeadline = &metav1.Duration{Duration: 10 * time.Minute}
	if got := vr.PendingDeadlineOf(); !got.Equal(created.Add(10 * time.Minute)) {
		t.Errorf("deadline %s with 10m", got)
	}
}

// A volume restored from a backup flagged FilesDropped (the last one left of its
// source) says so in status.volumes, before what its PodVolumeRestore says.
func TestVolumeStatusSaysAFlaggedBackupIsRestored(t *testing.T) {
	flagged := pvrIn("a", "data", v1.RunCompleted, "restored 3 files")
	flagged.Annotations = map[string]string{annotationFlaggedBackup: "restoring backup n2 although it is flagged FilesDropped"}
	plain := pvrIn("b", "data", v1.RunCompleted, "restored 3 files")
	long := pvrIn("c", "data", v1.RunFailed, strings.Repeat("x", 2000))
	long.Annotations = flagged.Annotations
	got := tallyRestores([]v1.PodVolumeRestore{flagged, plain, long}, nil, nil, nil, 0).volumes
	if want := "restoring backup n2 although it is flagged FilesDropped; restored 3 files"; got[0].Message != want {
		t.Errorf("flagged volume: message %q, want %q", got[0].Message, want)
	}
	if got[1].Message != "restored 3 files" {
		t.Errorf("plain volume: message %q", got[1].Message)
	}
	if n := len(got[2].Message); n > maxMessage {
		t.Errorf("long message has %d bytes, the API allows %d", n, maxMessage)
	}
}

// A volume's message in status.volumes is bounded as the API bounds it, and never cut
// inside a character: a status is JSON, which carries only valid UTF-8 (a cut
// character comes out as a replacement character, or not at all). Both ways a message
// is made are bounded: a PodVolumeRestore's own (volumeMessage) and that of a pod
// served by another pod's PodVolumeRestore of its claim (its sentence and the
// failure's).
func TestVolumeMessagesAreBoundedWholeCharacters(t *testing.T) {
	servedSentence := "claim shared, which pod a mounts too, is restored once, by PodVolumeRestore a-data"
	for _, tc := range []struct {
		name    string
		failure string // the PodVolumeRestore's message
		served  bool   // the entry of the pod it serves, else its own
	}{
		{name: "short", failure: "snapshot gone"},
		{name: "short, served", failure: "snapshot gone", served: true},
		{name: "long ASCII", failure: strings.Repeat("x", 2000)},
		{name: "long ASCII, served", failure: strings.Repeat("x", 2000), served: true},
		// 3-byte characters from the first byte on: the bound falls inside one, in
		// the PodVolumeRestore's own message and after the served sentence.
		{name: "long multi-byte", failure: strings.Repeat("日", 700)},
		{name: "long multi-byte, served", failure: strings.Repeat("日", 700), served: true},
		{name: "long multi-byte, served, shifted", failure: "é" + strings.Repeat("日", 700), served: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pvr := pvrIn("a", "data", v1.RunFailed, tc.failure)
			served := []v1.RestoreVolumeStatus{{Pod: "b", Volume: "data", PodVolumeRestore: pvr.Name, Message: servedSentence}}
			vols := tallyRestores([]v1.PodVolumeRestore{pvr}, nil, nil, served, 0).volumes
			got := vols[0] // pod a
			if tc.served {
				got = vols[1] // pod b
			}
			if n := len(got.Message); n > maxMessage {
				t.Errorf("message has %d bytes, the API allows %d", n, maxMessage)
			}
			if !utf8.ValidString(got.Message) {
				t.Errorf("message is not valid UTF-8 (a character cut at the bound): %q", got.Message)
			}
			whole := tc.failure
			if tc.served {
				whole = servedSentence + ": " + tc.failure
			}
			switch {
			case len(whole) <= maxMessage && got.Message != whole:
				t.Errorf("message %q, want %q", got.Message, whole)
			case len(whole) > maxMessage && (!strings.HasSuffix(got.Message, "...") || !strings.HasPrefix(whole, strings.TrimSuffix(got.Message, "..."))):
				t.Errorf("long message not cut to a prefix and \"...\": %q", got.Message)
			}
		})
	}
}
