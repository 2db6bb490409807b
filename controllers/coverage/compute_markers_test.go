package coverage

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
)

// The marker volume the restore webhook adds to a pod it held holds no data of the
// application: coverage does not list it as unprotected.
func TestComputeLeavesRestoreWaitsMarkerVolume(t *testing.T) {
	pod := testPod("shop", "db", 1, emptyDir("data"), restorewait.MarkerVolume(restorewait.MarkerVolumeName))
	pod.Spec.InitContainers = []corev1.Container{restorewait.Container(restorewait.ContainerName, "vr-1", []string{"data"},
		restorewait.MarkerVolumeName, 0, corev1.Container{})}
	cluster := policyctrl.NewCluster([]*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}}, []*corev1.Pod{pod}, nil, nil, nil)
	res := Compute(Input{Cluster: cluster, OperatorNamespace: "holdfast-system"})
	got := stateOf(res)
	if len(got) != 1 || got["shop/pod/db/data"] != "Unprotected  " {
		t.Errorf("volumes %v, want the volume data only", got)
	}
}
