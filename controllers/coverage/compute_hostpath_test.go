package coverage

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// A claim on a hostPath PersistentVolume that a policy selects is Skipped HostPath, as
// the run skips it, not Unprotected and not Protected; under --host-path-roots it is
// Protected.
func TestComputeHostPathClaims(t *testing.T) {
	e, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	claim := testClaim("shop", "local")
	claim.Spec.VolumeName = "pvc-1"
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/local-path-provisioner/pvc-1_shop_local"}}}}
	gold := compile(t, e, "gold", `pvc != null`, "")
	for roots, want := range map[string]string{
		"":                            "Skipped gold HostPath",
		"/var/local-path-provisioner": "Protected gold ",
	} {
		r, err := hostpath.ParseRoots(roots)
		if err != nil {
			t.Fatal(err)
		}
		cluster := policyctrl.NewCluster([]*corev1.Namespace{ns}, []*corev1.Pod{testPod("shop", "db-0", 1, claimVol("data", "local"))},
			[]*corev1.PersistentVolumeClaim{claim}, nil, nil).WithPersistentVolumes([]*corev1.PersistentVolume{pv}, r)
		res := Compute(Input{Cluster: cluster, Policies: []Policy{gold}})
		if got := stateOf(res)["shop/pvc/local"]; got != want {
			t.Errorf("roots %q: claim local is %q, want %q", roots, got, want)
		}
	}
}
