package coverage

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func TestSetStatus(t *testing.T) {
	now := metav1.NewTime(epoch)
	tests := []struct {
		name                string
		res                 *Result
		ready, covered      metav1.ConditionStatus
		readyReason, coverR string
		check               func(t *testing.T, st *v1.VolumeCoverageStatus)
	}{
		{"nothing at all", &Result{}, metav1.ConditionTrue, metav1.ConditionTrue, ReasonComputed, ReasonAllCovered, nil},
		{"all protected or excluded", &Result{Volumes: []Volume{
			{Namespace: "a", Source: "/pvc/db", Claim: "db", State: v1.CoverageProtected, Policy: "gold"},
			{Namespace: "a", Source: "/pod/x/cache", Name: "cache", State: v1.CoverageExcluded, Policy: "caches"},
			{Namespace: "b", Source: "/pod/y/logs", Name: "logs", State: v1.CoverageSkipped, Policy: "gold", Reason: "HostPath"},
		}}, metav1.ConditionTrue, metav1.ConditionTrue, ReasonComputed, ReasonAllCovered, func(t *testing.T, st *v1.VolumeCoverageStatus) {
			if st.Protected != 1 || st.Excluded != 1 || st.Skipped != 1 || st.Unprotected != 0 {
				t.Errorf("counts %d/%d/%d/%d", st.Protected, st.Skipped, st.Excluded, st.Unprotected)
			}
			if len(st.SkippedReasons) != 1 || st.SkippedReasons[0].Reason != "HostPath" || st.SkippedReasons[0].Examples[0] != "b/pod/y/logs" {
				t.Errorf("skippedReasons = %+v", st.SkippedReasons)
			}
			if len(st.Exclusions) != 1 || st.Exclusions[0].Reason != "caches" {
				t.Errorf("exclusions = %+v", st.Exclusions)
			}
		}},
		{"a policy that does not compile", &Result{Problems: []string{"policy p: spec.coverage.exclude: compilation failed"}},
			metav1.ConditionFalse, metav1.ConditionTrue, ReasonPolicyProblem, ReasonAllCovered, func(t *testing.T, st *v1.VolumeCoverageStatus) {
				if !apimeta.IsStatusConditionTrue(st.Conditions, v1.ConditionStalled) {
					t.Error("not Stalled")
				}
			}},
		{"thousands unprotected: bounded lists", bigResult(3000, 5000), metav1.ConditionTrue, metav1.ConditionFalse, ReasonComputed, ReasonUnprotected,
			func(t *testing.T, st *v1.VolumeCoverageStatus) {
				if st.Unprotected != 8000 {
					t.Errorf("unprotected = %d, want 8000", st.Unprotected)
				}
				if len(st.UnprotectedClaims) != v1.MaxCoverageEntries || st.UnprotectedClaimsOmitted != 2900 {
					t.Errorf("claims %d listed, %d omitted", len(st.UnprotectedClaims), st.UnprotectedClaimsOmitted)
				}
				if len(st.UnprotectedVolumes) != v1.MaxCoverageEntries || st.UnprotectedVolumesOmitted != 4900 {
					t.Errorf("volumes %d listed, %d omitted", len(st.UnprotectedVolumes), st.UnprotectedVolumesOmitted)
				}
				if len(st.Namespaces) != v1.MaxCoverageNamespaces || st.NamespacesOmitted != 1000-v1.MaxCoverageNamespaces {
					t.Errorf("namespaces %d listed, %d omitted", len(st.Namespaces), st.NamespacesOmitted)
				}
				raw, _ := json.Marshal(st)
				if len(raw) > 100_000 {
					t.Errorf("the status is %d bytes, want well under etcd's limit", len(raw))
				}
				t.Logf("status of 8000 unprotected volumes in 1000 namespaces: %d bytes", len(raw))
				c := apimeta.FindStatusCondition(st.Conditions, v1.ConditionCovered)
				if !strings.Contains(c.Message, "3000 claims and 5000 other pod volumes in 256 namespaces or more") {
					t.Errorf("Covered message %q", c.Message)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &v1.VolumeCoverageStatus{}
			setStatus(st, 1, tt.res, now)
			ready := apimeta.FindStatusCondition(st.Conditions, v1.ConditionReady)
			covered := apimeta.FindStatusCondition(st.Conditions, v1.ConditionCovered)
			if ready == nil || ready.Status != tt.ready || ready.Reason != tt.readyReason {
				t.Errorf("Ready = %+v, want %s %s", ready, tt.ready, tt.readyReason)
			}
			if covered == nil || covered.Status != tt.covered || covered.Reason != tt.coverR {
				t.Errorf("Covered = %+v, want %s %s", covered, tt.covered, tt.coverR)
			}
			if st.ObservedGeneration != 1 || st.LastComputedTime == nil {
				t.Errorf("observedGeneration %d, lastComputedTime %v", st.ObservedGeneration, st.LastComputedTime)
			}
			if tt.check != nil {
				tt.check(t, st)
			}
		})
	}
}

// bigResult has claims unprotected claims and vols unprotected emptyDirs spread over
// 1000 namespaces with long names.
func bigResult(claims, vols int) *Result {
	res := &Result{}
	for i := range claims + vols {
		ns := fmt.Sprintf("tenant-%s-%04d", strings.Repeat("x", 40), i%1000)
		v := Volume{Namespace: ns, State: v1.CoverageUnprotected, Pod: fmt.Sprintf("pod-%s-%d", strings.Repeat("p", 60), i)}
		if i < claims {
			v.Claim, v.Source = fmt.Sprintf("claim-%s-%d", strings.Repeat("c", 60), i), fmt.Sprintf("/pvc/claim-%d", i)
		} else {
			v.Name, v.Type, v.Source = "cache", "emptyDir", fmt.Sprintf("/deployment/%s-%d/cache", strings.Repeat("d", 60), i)
		}
		res.Volumes = append(res.Volumes, v)
	}
	return res
}
