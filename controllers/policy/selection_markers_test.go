package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// The marker volume the restore webhook adds to a pod it held is Holdfast's own, not
// the application's: a policy that selects every volume neither backs it up nor counts
// it as skipped.
func TestSelectVolumesLeavesRestoreWaitsMarkerVolume(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	sel, err := engine.Compile(v1.VolumeSelector{Volumes: `true`})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
		Spec: corev1.PodSpec{NodeName: "n",
			InitContainers: []corev1.Container{restorewait.Container(restorewait.ContainerName, "vr-1", []string{"data"}, restorewait.MarkerVolumeName, 0, corev1.Container{})},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				restorewait.MarkerVolume(restorewait.MarkerVolumeName)}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	snap := &snapshot{namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}},
		pods: map[string][]*corev1.Pod{"shop": {pod}}}
	out := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	if len(out.targets) != 1 || out.targets[0].volume != "data" {
		t.Errorf("targets %+v, want the volume data only", out.targets)
	}
	if len(out.skipped) != 0 {
		t.Errorf("skipped %v, want nothing", out.skipped)
	}
}
