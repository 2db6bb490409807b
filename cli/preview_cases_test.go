package cli

import (
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/controllers/policy/selectiontest"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// preview answers the controller's selection cases (controllers/policy
// TestSelectionCases) as a run does: the same volumes selected, the same skip reasons.
func TestPreviewSelectionCases(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range selectiontest.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			p := v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "proposed"},
				Spec: v1.VolumeBackupPolicySpec{Selector: tc.Selector, ClaimsWithoutPods: tc.ClaimsWithoutPods, StorageLocation: "default"}}
			cluster := policyctrl.NewCluster(tc.Namespaces, tc.Pods, tc.Claims, nil, tc.Nodes)
			res := computePreview(engine, previewInput{Cluster: cluster, Proposed: []v1.VolumeBackupPolicy{p}})
			if len(res.Policies) != 1 {
				t.Fatalf("policies %+v", res.Policies)
			}
			got := map[string]string{}
			key := func(v PreviewVolume) string {
				if v.Pod == "" {
					return v.Namespace + "/" + v.Claim
				}
				return v.Namespace + "/" + v.Pod + "/" + v.Volume
			}
			for _, v := range res.Policies[0].Selected {
				got[key(v)] = ""
			}
			for _, v := range res.Policies[0].Skipped {
				got[key(v)] = v.Reason
			}
			if !maps.Equal(got, tc.Want) {
				t.Errorf("preview picked %v, want %v", got, tc.Want)
			}
		})
	}
}
