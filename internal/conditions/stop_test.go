package conditions

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func TestResultMapsEachStop(t *testing.T) {
	const (
		T = metav1.ConditionTrue
		F = metav1.ConditionFalse
		U = metav1.ConditionUnknown
	)
	boom := errors.New("connection refused")
	for _, tc := range []struct {
		name       string
		err        error
		want       map[string]metav1.ConditionStatus
		reason     string
		requeue    time.Duration
		returnsErr bool
	}{
		{"nil leaves conditions alone", nil, map[string]metav1.ConditionStatus{}, "", 0, false},
		{"stalled", Stall("SelectorInvalid", "spec.selector.volumes: %s", "bad"),
			map[string]metav1.ConditionStatus{v1.ConditionStalled: T, v1.ConditionReady: F}, "SelectorInvalid", 0, false},
		{"wrapped stalled", fmt.Errorf("policy p: %w", Stall("NoGrant", "no grant")),
			map[string]metav1.ConditionStatus{v1.ConditionStalled: T, v1.ConditionReady: F}, "NoGrant", 0, false},
		{"waiting", Wait("LocationNotReady", 30*time.Second, "location %q is not Ready", "s3"),
			map[string]metav1.ConditionStatus{v1.ConditionReconciling: T, v1.ConditionReady: U}, "LocationNotReady", 30 * time.Second, false},
		{"transient", Transient("StoreUnreachable", boom),
			map[string]metav1.ConditionStatus{v1.ConditionReconciling: T, v1.ConditionReady: F}, "StoreUnreachable", 0, true},
		{"plain error", boom,
			map[string]metav1.ConditionStatus{v1.ConditionReconciling: T, v1.ConditionReady: F}, "Error", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conds []metav1.Condition
			res, err := Result(&conds, 3, tc.err)
			if got := statuses(conds); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("conditions = %v, want %v", got, tc.want)
			}
			if tc.reason != "" {
				if c := meta.FindStatusCondition(conds, v1.ConditionReady); c == nil || c.Reason != tc.reason || c.ObservedGeneration != 3 {
					t.Errorf("Ready = %+v, want reason %s at generation 3", c, tc.reason)
				}
			}
			if res.RequeueAfter != tc.requeue {
				t.Errorf("RequeueAfter = %v, want %v", res.RequeueAfter, tc.requeue)
			}
			if (err != nil) != tc.returnsErr {
				t.Errorf("error = %v, want returned: %v", err, tc.returnsErr)
			}
			if tc.returnsErr && !errors.Is(err, boom) {
				t.Errorf("returned error %v does not wrap the cause", err)
			}
		})
	}
}

func TestStopKinds(t *testing.T) {
	if !StopIsStalled(fmt.Errorf("x: %w", Stall("R", "m"))) || StopIsStalled(Wait("R", 0, "m")) || StopIsStalled(nil) {
		t.Error("IsStalled misclassifies")
	}
	if !StopIsWaiting(Wait("R", time.Second, "m")) || StopIsWaiting(errors.New("x")) {
		t.Error("IsWaiting misclassifies")
	}
}
