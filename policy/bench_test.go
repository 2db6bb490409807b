package policy

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// BenchmarkSelect10kPods evaluates a typical selector over 10,000 pods (two volumes
// each: a claim and an emptyDir) in 1,000 namespaces, all in memory as the
// controller's informer cache holds them: no API call per pod. It reports the cost per
// pod; with one Cache per pass each namespace is converted once, not once per pod.
func BenchmarkSelect10kPods(b *testing.B) {
	const namespaces, pods = 1000, 10000
	e, err := NewEngine()
	if err != nil {
		b.Fatal(err)
	}
	sel, err := e.Compile(v1.VolumeSelector{
		Namespaces: `namespace.metadata.labels[?"backup"].orValue("") != "none"`,
		Volumes: `(pvc != null && pvc.spec.storageClassName == "fast") ||
			(has(volume.emptyDir) && !volume.name.startsWith("cache")) ||
			volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`,
	})
	if err != nil {
		b.Fatal(err)
	}
	nss := make([]*corev1.Namespace, namespaces)
	for i := range nss {
		nss[i] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%d", i), Labels: map[string]string{"backup": "gold"}}}
	}
	type podVols struct {
		ns   *corev1.Namespace
		pod  *corev1.Pod
		pvcs []*corev1.PersistentVolumeClaim
	}
	all := make([]podVols, pods)
	for i := range all {
		ns := nss[i%namespaces]
		claim := fmt.Sprintf("data-%d", i)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: ns.Name,
				Labels: map[string]string{"app": "web", "tier": "backend"}, Annotations: map[string]string{"backup.velero.io/backup-volumes": "logs"}},
			Spec: corev1.PodSpec{NodeName: "node-1",
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
					{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns.Name},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: new("fast")}}
		all[i] = podVols{ns: ns, pod: pod, pvcs: []*corev1.PersistentVolumeClaim{pvc, nil}}
	}
	b.ReportAllocs()
	selected := 0
	for b.Loop() {
		selected = 0
		cache := &Cache{}
		for _, p := range all {
			if ok, err := sel.MatchNamespace(p.ns, cache); err != nil || !ok {
				b.Fatal("namespace not selected", err)
			}
			for i := range p.pod.Spec.Volumes {
				ok, err := sel.MatchVolume(Volume{Namespace: p.ns, Pod: p.pod, Volume: &p.pod.Spec.Volumes[i], PVC: p.pvcs[i]}, cache)
				if err != nil {
					b.Fatal(err)
				}
				if ok {
					selected++
				}
			}
		}
	}
	if selected != pods {
		b.Fatalf("selected %d volumes, want %d", selected, pods)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pods, "ns/pod")
}
