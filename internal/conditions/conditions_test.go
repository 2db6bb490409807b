package conditions

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func statuses(conds []metav1.Condition) map[string]metav1.ConditionStatus {
	out := map[string]metav1.ConditionStatus{}
	for _, c := range conds {
		out[c.Type] = c.Status
	}
	return out
}

func TestTransitions(t *testing.T) {
	const (
		T = metav1.ConditionTrue
		F = metav1.ConditionFalse
		U = metav1.ConditionUnknown
	)
	for _, tc := range []struct {
		name  string
		steps []func(*[]metav1.Condition)
		want  map[string]metav1.ConditionStatus
	}{
		{"new object reconciling",
			[]func(*[]metav1.Condition){func(c *[]metav1.Condition) { MarkReconciling(c, 1, "Probing", "probing") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: U, v1.ConditionReconciling: T}},
		{"reconciling then ready",
			[]func(*[]metav1.Condition){
				func(c *[]metav1.Condition) { MarkReconciling(c, 1, "Probing", "probing") },
				func(c *[]metav1.Condition) { MarkReady(c, 1, ReasonSucceeded, "ok") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: T}},
		{"ready object re-checking stays ready",
			[]func(*[]metav1.Condition){
				func(c *[]metav1.Condition) { MarkReady(c, 1, ReasonSucceeded, "ok") },
				func(c *[]metav1.Condition) { MarkReconciling(c, 2, "Probing", "probing") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: T, v1.ConditionReconciling: T}},
		{"stalled clears reconciling",
			[]func(*[]metav1.Condition){
				func(c *[]metav1.Condition) { MarkReconciling(c, 1, "Probing", "probing") },
				func(c *[]metav1.Condition) { MarkStalled(c, 1, "InvalidSelector", "bad") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: F, v1.ConditionStalled: T}},
		{"fixed after stalled",
			[]func(*[]metav1.Condition){
				func(c *[]metav1.Condition) { MarkStalled(c, 1, "InvalidSelector", "bad") },
				func(c *[]metav1.Condition) { MarkReady(c, 2, ReasonSucceeded, "ok") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: T}},
		{"not ready keeps retrying",
			[]func(*[]metav1.Condition){func(c *[]metav1.Condition) { MarkNotReady(c, 1, "StoreUnreachable", "down") }},
			map[string]metav1.ConditionStatus{v1.ConditionReady: F, v1.ConditionReconciling: T}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conds []metav1.Condition
			for _, step := range tc.steps {
				step(&conds)
			}
			got := statuses(conds)
			if len(got) != len(tc.want) {
				t.Fatalf("conditions %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %s, want %s (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestMessagesAndGenerationAreRecorded(t *testing.T) {
	var conds []metav1.Condition
	MarkStalled(&conds, 7, "InvalidSelector", "spec.selector.volumes: undeclared reference to 'pods'")
	c := meta.FindStatusCondition(conds, v1.ConditionStalled)
	if c == nil || c.ObservedGeneration != 7 || c.Reason != "InvalidSelector" {
		t.Fatalf("stalled condition = %+v", c)
	}
	if ReadyMessage(conds) != "spec.selector.volumes: undeclared reference to 'pods'" || IsReady(conds) {
		t.Errorf("ready message %q, ready %v", ReadyMessage(conds), IsReady(conds))
	}
}
