package policy

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-dev/holdfast/controllers/policy/selectiontest"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// The shared selection cases, through the selection pass a run makes. kubectl holdfast
// preview runs the same cases (cli/preview_cases_test.go).
func TestSelectionCases(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range selectiontest.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			sel, err := engine.Compile(tc.Selector)
			if err != nil {
				t.Fatal(err)
			}
			snap := newSnapshot(tc.Namespaces, tc.Pods, tc.Claims, nil, tc.Nodes)
			got := map[string]string{}
			out := selectVolumesVisit(sel, snap, tc.ClaimsWithoutPods,
				func(pod *corev1.Pod, vol *corev1.Volume, skip string) {
					got[pod.Namespace+"/"+pod.Name+"/"+vol.Name] = skip
				},
				func(pvc *corev1.PersistentVolumeClaim, skip string) { got[pvc.Namespace+"/"+pvc.Name] = skip })
			if !maps.Equal(got, tc.Want) {
				t.Errorf("picked %v, want %v", got, tc.Want)
			}
			// What a run records agrees with what it visits.
			targets := map[string]string{}
			for _, tg := range out.targets {
				targets[tg.key()] = ""
			}
			for reason, keys := range out.skipped {
				for _, k := range keys {
					targets[k] = reason
				}
			}
			if !maps.Equal(targets, tc.Want) {
				t.Errorf("run's targets and skips %v, want %v", targets, tc.Want)
			}
		})
	}
}
