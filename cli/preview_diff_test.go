package cli

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// The proposed policies replace the live ones of the same name and the other live
// policies stay: a volume that a proposed change drops but another live policy still
// protects does not lose protection, and one only the changed policy protected does.
func TestPreviewDiffKeepsTheOtherLivePolicies(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	running := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:   corev1.PodSpec{NodeName: "n", Volumes: []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	cluster := policyctrl.NewCluster(
		[]*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, {ObjectMeta: metav1.ObjectMeta{Name: "blog"}}},
		[]*corev1.Pod{running("shop", "web"), running("blog", "web")}, nil, nil, nil)
	policy := func(name, namespaces string) v1.VolumeBackupPolicy {
		return v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.VolumeBackupPolicySpec{StorageLocation: "default", Selector: v1.VolumeSelector{Namespaces: namespaces}}}
	}
	live := []v1.VolumeBackupPolicy{
		policy("both", `namespace.metadata.name in ["shop", "blog"]`),
		policy("shop-only", `namespace.metadata.name == "shop"`),
	}
	res := computePreview(engine, previewInput{Cluster: cluster, Live: live,
		Proposed: []v1.VolumeBackupPolicy{policy("both", `namespace.metadata.name == "nothing"`)}})
	if len(res.Unprotected) != 1 || res.Unprotected[0].Namespace != "blog" || res.Unprotected[0].BeforePolicy != "both" {
		t.Errorf("unprotected %+v, want only blog's cache (shop-only still protects shop's)", res.Unprotected)
	}
	if len(res.Protected) != 0 {
		t.Errorf("protected %+v, want none", res.Protected)
	}
}
