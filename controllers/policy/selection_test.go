package policy

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// BenchmarkSelectVolumes is the controller's whole selection pass (CEL, skip reasons,
// source identity) over 10,000 Deployment pods with three volumes each (a claim, an
// emptyDir, a service account token) in 1,000 namespaces, from memory as the informer
// caches hold them. Run it without the control plane:
//
//	go test ./controllers/policy -short -run '^$' -bench SelectVolumes
func BenchmarkSelectVolumes(b *testing.B) {
	const namespaces, pods = 1000, 10000
	engine, err := celpolicy.NewEngine()
	if err != nil {
		b.Fatal(err)
	}
	sel, err := engine.Compile(v1.VolumeSelector{
		Namespaces: `namespace.metadata.labels[?"backup"].orValue("") == "gold"`,
		Volumes:    `(pvc != null && pvc.spec.storageClassName == "fast") || has(volume.emptyDir) || has(volume.projected)`,
	})
	if err != nil {
		b.Fatal(err)
	}
	snap := &snapshot{pods: map[string][]*corev1.Pod{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
	owners := map[string]*metav1.OwnerReference{}
	for i := range namespaces {
		snap.namespaces = append(snap.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("team-%d", i), Labels: map[string]string{"backup": "gold"}}})
	}
	for i := range pods {
		ns := snap.namespaces[i%namespaces].Name
		rs := fmt.Sprintf("app-%d-5d8f7", i)
		owners[ns+"/"+rs] = &metav1.OwnerReference{Kind: "Deployment", Name: fmt.Sprintf("app-%d", i), Controller: new(true)}
		claim := fmt.Sprintf("data-%d", i)
		snap.claims[claimKey(ns, claim)] = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: new("fast")}}
		snap.pods[ns] = append(snap.pods[ns], &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: rs + "-x9k2p", Namespace: ns, Labels: map[string]string{"app": "web"},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: rs, Controller: new(true)}}},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
					{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
						Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
				}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		})
	}
	snap.rsOwner = ownerFromCache(owners)
	b.ReportAllocs()
	var out *selection
	for b.Loop() {
		out = selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	}
	if len(out.targets) != 2*pods || len(out.skipped[SkipServiceAccountToken]) != pods || out.namespaces != namespaces {
		b.Fatalf("selected %d, skipped %d tokens, %d namespaces", len(out.targets), len(out.skipped[SkipServiceAccountToken]), out.namespaces)
	}
	if got := out.targets[1].sourcePath; got != "/deployment/app-0/cache" {
		b.Fatalf("source path %q", got)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pods, "ns/pod")
	// The CEL cost of the pass, against celpolicy.PassCostBudget.
	b.ReportMetric(float64(out.spent), "cel-cost/pass")
}

func TestSelectVolumesCountsEvaluationErrors(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	// Reads a label without has() or ?: a pod without it makes the evaluation fail.
	sel, err := engine.Compile(v1.VolumeSelector{Volumes: `pod.metadata.labels["tier"] == "db"`})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	mk := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
			Spec:   corev1.PodSpec{NodeName: "n", Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	snap := &snapshot{namespaces: []*corev1.Namespace{ns}, pods: map[string][]*corev1.Pod{
		"shop": {mk("db", map[string]string{"tier": "db"}), mk("web", map[string]string{"tier": "web"}), mk("bare", nil)}}}
	out := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	if len(out.targets) != 1 || out.targets[0].pod.Name != "db" || out.targets[0].sourcePath != "/pod/db/v" {
		t.Errorf("targets %+v", out.targets)
	}
	if got := out.skipped[SkipSelectorError]; len(got) != 1 || got[0] != "shop/bare/v" {
		t.Errorf("SelectorError skips %v", got)
	}
	if out.firstError == nil || !strings.Contains(out.firstError.Error(), "shop/bare/v") || !strings.Contains(out.firstError.Error(), "spec.selector.volumes") {
		t.Errorf("firstError = %v", out.firstError)
	}
}

// A runtime error of the namespace expression does not silently drop the namespace
// (review M2): the volumes the policy would back up there are skipped as
// NamespaceSelectorError and the first error is kept for the event.
func TestSelectVolumesCountsNamespaceEvaluationErrors(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	// The review's example: an annotation with an unexpected value fails int().
	sel, err := engine.Compile(v1.VolumeSelector{
		Namespaces: `int(namespace.metadata.annotations[?"tier"].orValue("0")) > 1`,
		Volumes:    `has(volume.emptyDir)`,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns := func(name, tier string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"tier": tier}}}
	}
	pod := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: "n", Volumes: []corev1.Volume{
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
			}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	snap := &snapshot{namespaces: []*corev1.Namespace{ns("gold", "gold"), ns("high", "3"), ns("low", "1")},
		pods: map[string][]*corev1.Pod{"gold": {pod("gold", "web")}, "high": {pod("high", "db")}, "low": {pod("low", "app")}}}
	out := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	if len(out.targets) != 1 || out.targets[0].pod.Name != "db" || out.namespaces != 1 {
		t.Errorf("targets %+v in %d namespaces, want high/db/cache", out.targets, out.namespaces)
	}
	if got := out.skipped[SkipNamespaceSelectorError]; len(got) != 1 || got[0] != "gold/web/cache" {
		t.Errorf("NamespaceSelectorError skips %v, want gold/web/cache", got)
	}
	if out.firstError == nil || !strings.Contains(out.firstError.Error(), "namespace gold") ||
		!strings.Contains(out.firstError.Error(), "spec.selector.namespaces") {
		t.Errorf("firstError = %v", out.firstError)
	}
}

// A selection pass has a CEL cost budget (review L4): once spent, the volumes not
// evaluated are skipped as SelectorBudgetExceeded (never silently dropped), and the
// policy is Ready=False saying so.
func TestSelectVolumesStopsAtTheCostBudget(t *testing.T) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	// all() over every key, with no short cut: each pod costs the same whatever the
	// map's iteration order.
	sel, err := engine.Compile(v1.VolumeSelector{Volumes: `pod.metadata.annotations.all(k, !k.startsWith("skip"))`})
	if err != nil {
		t.Fatal(err)
	}
	annotations := map[string]string{}
	for i := range 50 {
		annotations[fmt.Sprintf("tenant.example.com/key-%d", i)] = strings.Repeat("v", 100)
	}
	snap := &snapshot{namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}}, pods: map[string][]*corev1.Pod{}}
	for i := range 20 {
		annotations := maps.Clone(annotations)
		annotations["backup"] = "yes"
		snap.pods["shop"] = append(snap.pods["shop"], &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%02d", i), Namespace: "shop", Annotations: annotations},
			Spec:       corev1.PodSpec{NodeName: "n", Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning}})
	}
	all := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	if len(all.targets) != 20 || all.budgetExceeded || all.spent == 0 {
		t.Fatalf("with the default budget: %d targets, exceeded %v, spent %d", len(all.targets), all.budgetExceeded, all.spent)
	}
	snap.costBudget = all.spent / 4 // a quarter of what the pass needs
	out := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
	skipped := len(out.skipped[SkipSelectorBudgetExceeded])
	if !out.budgetExceeded || skipped == 0 || len(out.targets)+skipped != 20 || len(out.targets) > 6 {
		t.Errorf("with a quarter of the budget: %d targets, %d skipped as %s, exceeded %v",
			len(out.targets), skipped, SkipSelectorBudgetExceeded, out.budgetExceeded)
	}
	if out.firstError != nil {
		t.Errorf("a spent budget is reported as a selector error: %v", out.firstError)
	}

	r := &VolumeBackupPolicyReconciler{}
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 1}}
	if err := r.reconcileReady(t.Context(), &scope{policy: p, sel: out}); err != nil {
		t.Fatal(err)
	}
	ready := meta(p, v1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != ReasonSelectorBudgetExceeded ||
		!strings.Contains(ready.Message, fmt.Sprintf("did not evaluate %d volumes", skipped)) {
		t.Errorf("Ready = %+v", ready)
	}
}
