package coverage

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// benchCluster has pods pods in namespaces of 50 pods: each pod a Deployment replica
// (5 replicas per Deployment) with labels, annotations, its own claim, an emptyDir
// cache, an emptyDir of state and a configMap.
func benchCluster(pods int) *policyctrl.Cluster {
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
		pod := ownedBy(testPod(ns, fmt.Sprintf("%s-5d8f-%d", app, i), i%7, claimVol("data", claim), emptyDir("cache"), emptyDir("state"), configMap("conf")),
			"ReplicaSet", app+"-5d8f")
		pod.Labels = map[string]string{"app": app, "tier": []string{"web", "db"}[i%2], "pod-template-hash": "5d8f"}
		pod.Annotations = map[string]string{"backup.velero.io/backup-volumes": "data,state", "checksum/config": "0123456789abcdef"}
		pod.Spec.NodeName = fmt.Sprintf("node-%d", i%100)
		podList = append(podList, pod)
		pvc := testClaim(ns, claim)
		pvc.Spec.StorageClassName = new([]string{"fast", "slow"}[i%2])
		claims = append(claims, pvc)
	}
	return policyctrl.NewCluster(nss, podList, claims, rss, nil)
}

// BenchmarkCompute10000Pods is one computation over 10,000 pods (40,000 volumes, of
// which 30,000 hold data) with three policies and an exclusion.
func BenchmarkCompute10000Pods(b *testing.B) {
	e, err := celpolicy.NewEngine()
	if err != nil {
		b.Fatal(err)
	}
	gold, err := e.Compile(v1.VolumeSelector{Namespaces: `namespace.metadata.labels[?"backup"].orValue("") == "gold"`})
	if err != nil {
		b.Fatal(err)
	}
	claims, err := e.Compile(v1.VolumeSelector{Volumes: `pvc != null && pvc.spec.storageClassName == "fast"`})
	if err != nil {
		b.Fatal(err)
	}
	velero, err := e.Compile(v1.VolumeSelector{Volumes: `volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`})
	if err != nil {
		b.Fatal(err)
	}
	caches, err := e.CompileExclusion(`has(volume.emptyDir) && volume.name == "cache"`)
	if err != nil {
		b.Fatal(err)
	}
	policies := []Policy{{Name: "gold", Selector: gold}, {Name: "fast-claims", Selector: claims, Exclusion: caches},
		{Name: "velero", Selector: velero, Suspended: true}}
	cluster := benchCluster(10_000)
	b.ResetTimer()
	var res *Result
	for b.Loop() {
		res = Compute(Input{Cluster: cluster, Policies: policies})
		setStatus(&v1.VolumeCoverageStatus{}, 1, res, metav1.Now())
	}
	b.StopTimer()
	counts := map[string]int{}
	for _, v := range res.Volumes {
		counts[v.State]++
	}
	b.Logf("%d sources: %v", len(res.Volumes), counts)
}
