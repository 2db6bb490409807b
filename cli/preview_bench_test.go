package cli

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// BenchmarkPreview10000Pods is one preview (the proposed policy's selection and two
// coverage computations for the diff) over 10,000 Deployment pods in 200 namespaces,
// each with its own claim, an emptyDir and a configMap; the proposed change drops the
// silver namespaces from a policy. Target: well under a second. Without the control
// plane:
//
//	go test ./cli -short -run '^$' -bench Preview -benchmem
func BenchmarkPreview10000Pods(b *testing.B) {
	const pods = 10_000
	var nss []*corev1.Namespace
	var podList []*corev1.Pod
	var claims []*corev1.PersistentVolumeClaim
	var rss []*metav1.PartialObjectMetadata
	for i := range pods {
		ns := fmt.Sprintf("team-%03d", i/50)
		if i%50 == 0 {
			nss = append(nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
				Labels: map[string]string{"backup": []string{"gold", "silver", "none"}[i/50%3]}}})
		}
		app := fmt.Sprintf("app-%d", i/5)
		if i%5 == 0 {
			rss = append(rss, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app + "-5d8f",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: app, UID: "u", Controller: new(true)}}}})
		}
		claim := fmt.Sprintf("data-%d", i)
		podList = append(podList, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-5d8f-%d", app, i), Namespace: ns, Labels: map[string]string{"app": app},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: app + "-5d8f", Controller: new(true)}}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%100), Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
					{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}})
		claims = append(claims, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
			Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}})
	}
	cluster := policyctrl.NewCluster(nss, podList, claims, rss, nil)
	policy := func(name, namespaces string) v1.VolumeBackupPolicy {
		return v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.VolumeBackupPolicySpec{StorageLocation: "default", Selector: v1.VolumeSelector{Namespaces: namespaces, Volumes: "pvc != null"}}}
	}
	live := []v1.VolumeBackupPolicy{
		policy("claims", `namespace.metadata.labels[?"backup"].orValue("") in ["gold", "silver"]`),
		policy("caches", `namespace.metadata.labels[?"backup"].orValue("") == "gold"`),
	}
	live[1].Spec.Selector.Volumes = "has(volume.emptyDir)"
	proposed := []v1.VolumeBackupPolicy{policy("claims", `namespace.metadata.labels[?"backup"].orValue("") == "gold"`)}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var res *PreviewResult
	for b.Loop() {
		res = computePreview(engine, previewInput{Cluster: cluster, Live: live, Proposed: proposed})
	}
	// 67 silver namespaces of 50 claims each stop being protected.
	if len(res.Unprotected) != 67*50 || len(res.Protected) != 0 || len(res.Policies[0].Selected) != 67*50 {
		b.Fatalf("unprotected %d, protected %d, selected %d", len(res.Unprotected), len(res.Protected), len(res.Policies[0].Selected))
	}
}
