package coverage

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The story of issue 17's coverage: in one namespace a claim a policy selects, a
// claim none selects, an emptyDir, a hostPath the policy selects and a cache its
// exclusion matches. The VolumeCoverage and the metrics say Protected, Unprotected,
// Skipped and Excluded; the unselected claim gets one Unprotected event; a policy
// change protects it, its series goes away and a Protected event says so.
func TestCoverageStory(t *testing.T) {
	e := testenv.Require(t, env)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	node := "node-" + ns

	for _, name := range []string{"data", "loose"} {
		create(t, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}})
	}
	runningPod(t, ns, "db", node, claimVol("data", "data"), configMap("conf"))
	runningPod(t, ns, "tool", node, claimVol("loose", "loose"), emptyDir("scratch"), hostPath("logs"), emptyDir("cache"))

	policy := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: v1.VolumeBackupPolicySpec{StorageLocation: "default",
			Selector: v1.VolumeSelector{Namespaces: fmt.Sprintf("namespace.metadata.name == %q", ns),
				Volumes: `(pvc != null && pvc.metadata.name == "data") || has(volume.hostPath)`},
			Coverage: &v1.CoverageSpec{Exclude: fmt.Sprintf(`namespace.metadata.name == %q && volume.name == "cache"`, ns)}}}
	create(t, policy)
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), policy) })

	want := v1.NamespaceCoverage{Namespace: ns, Protected: 1, Skipped: 1, Excluded: 1, Unprotected: 2}
	cov := waitCoverage(t, "the first coverage of "+ns, func(c *v1.VolumeCoverage) error {
		if got := nsCoverage(c, ns); got != want {
			return fmt.Errorf("namespace coverage %+v, want %+v", got, want)
		}
		return nil
	})
	if !slices.Contains(cov.Status.UnprotectedClaims, v1.UnprotectedClaim{Namespace: ns, Name: "loose", Pod: "tool"}) {
		t.Errorf("unprotectedClaims %+v lack %s/loose", cov.Status.UnprotectedClaims, ns)
	}
	if !slices.Contains(cov.Status.UnprotectedVolumes, v1.UnprotectedVolume{Namespace: ns, Source: "/pod/tool/scratch", Volume: "scratch", Pod: "tool", Type: "emptyDir"}) {
		t.Errorf("unprotectedVolumes %+v lack %s/pod/tool/scratch", cov.Status.UnprotectedVolumes, ns)
	}
	if !hasExample(cov.Status.SkippedReasons, "HostPath", ns+"/pod/tool/logs") {
		t.Errorf("skippedReasons %+v lack HostPath %s/pod/tool/logs", cov.Status.SkippedReasons, ns)
	}
	if !hasExample(cov.Status.Exclusions, ns, ns+"/pod/tool/cache") {
		t.Errorf("exclusions %+v lack %s: %s/pod/tool/cache", cov.Status.Exclusions, ns, ns)
	}
	if c := apimeta.FindStatusCondition(cov.Status.Conditions, v1.ConditionCovered); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "claim "+ns+"/loose") {
		t.Errorf("Covered = %+v, want False naming claim %s/loose", c, ns)
	}
	if !apimeta.IsStatusConditionTrue(cov.Status.Conditions, v1.ConditionReady) {
		t.Errorf("not Ready: %+v", cov.Status.Conditions)
	}

	// kubectl get answers "is anything unprotected?" at a glance; describe tells the story.
	out, err := e.Kubectl(ctx, "get", "vcov")
	if err != nil {
		t.Fatal(err)
	}
	if header := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(header, []string{"NAME", "PROTECTED", "SKIPPED", "EXCLUDED", "UNPROTECTED", "AGE"}) {
		t.Errorf("kubectl get vcov columns %q", header)
	}
	if described, err := e.Kubectl(ctx, "describe", "vcov", "cluster"); err != nil || !strings.Contains(described, "Unprotected Claims:") {
		t.Errorf("kubectl describe vcov cluster: %v\n%s", err, described)
	} else if os.Getenv("HOLDFAST_TEST_LOG") != "" {
		t.Logf("kubectl get vcov\n%s\nkubectl describe vcov cluster\n%s", out, described)
	}

	// The metrics say the same, from the registry the manager serves.
	for state, n := range map[string]float64{"protected": 1, "skipped": 1, "excluded": 1, "unprotected": 2} {
		if got, ok := gauge(t, "holdfast_coverage_volumes", map[string]string{"namespace": ns, "state": state}); !ok || got != n {
			t.Errorf("holdfast_coverage_volumes{namespace=%s,state=%s} = %v (present %v), want %v", ns, state, got, ok, n)
		}
	}
	if got, ok := gauge(t, "holdfast_unprotected_claim", map[string]string{"namespace": ns, "claim": "loose"}); !ok || got != 1 {
		t.Errorf("holdfast_unprotected_claim{claim=loose} = %v (present %v), want 1", got, ok)
	}
	if _, ok := gauge(t, "holdfast_unprotected_claim", map[string]string{"namespace": ns, "claim": "data"}); ok {
		t.Error("the protected claim data has a holdfast_unprotected_claim series")
	}
	if got, ok := gauge(t, "holdfast_unprotected_volume", map[string]string{"namespace": ns, "source": "/pod/tool/scratch", "volume": "scratch"}); !ok || got != 1 {
		t.Errorf("holdfast_unprotected_volume{source=/pod/tool/scratch} = %v (present %v), want 1", got, ok)
	}
	if got, ok := gauge(t, "holdfast_node_protected_volumes", map[string]string{"node": node}); !ok || got != 1 {
		t.Errorf("holdfast_node_protected_volumes{node=%s} = %v (present %v), want 1", node, got, ok)
	}

	// One Warning on the unprotected claim, not one per computation.
	loose := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "loose"}}
	waitEvent(t, loose, corev1.EventTypeWarning, EventUnprotected)
	computedAfter(t, cov.Status.LastComputedTime, 2, func(i int) {
		// A change that moves nothing in this namespace: the computation runs again.
		patchLabels(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, map[string]string{"touch": fmt.Sprint(i)})
	})
	if ev := findEvent(t, loose, corev1.EventTypeWarning, EventUnprotected); ev.Series != nil || ev.Count > 1 {
		t.Errorf("the Unprotected event was repeated: count %d, series %+v", ev.Count, ev.Series)
	}

	// The policy now selects loose too: it is protected, its series goes away.
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(policy), policy); err != nil {
		t.Fatal(err)
	}
	policy.Spec.Selector.Volumes = `pvc != null || has(volume.hostPath)`
	if err := e.Client.Update(ctx, policy); err != nil {
		t.Fatal(err)
	}
	want = v1.NamespaceCoverage{Namespace: ns, Protected: 2, Skipped: 1, Excluded: 1, Unprotected: 1}
	cov = waitCoverage(t, "claim loose protected", func(c *v1.VolumeCoverage) error {
		if got := nsCoverage(c, ns); got != want {
			return fmt.Errorf("namespace coverage %+v, want %+v", got, want)
		}
		return nil
	})
	if slices.Contains(cov.Status.UnprotectedClaims, v1.UnprotectedClaim{Namespace: ns, Name: "loose", Pod: "tool"}) {
		t.Errorf("unprotectedClaims %+v still list %s/loose", cov.Status.UnprotectedClaims, ns)
	}
	if got, ok := gauge(t, "holdfast_unprotected_claim", map[string]string{"namespace": ns, "claim": "loose"}); ok {
		t.Errorf("holdfast_unprotected_claim{claim=loose} = %v is still exported", got)
	}
	if got, _ := gauge(t, "holdfast_node_protected_volumes", map[string]string{"node": node}); got != 2 {
		t.Errorf("holdfast_node_protected_volumes{node=%s} = %v, want 2", node, got)
	}
	waitEvent(t, loose, corev1.EventTypeNormal, EventProtected)
}

// A deleted VolumeCoverage comes back with its status.
func TestCoverageRecreated(t *testing.T) {
	e := testenv.Require(t, env)
	waitCoverage(t, "a VolumeCoverage", func(*v1.VolumeCoverage) error { return nil })
	old := &v1.VolumeCoverage{ObjectMeta: metav1.ObjectMeta{Name: v1.VolumeCoverageName}}
	if err := e.Client.Get(t.Context(), client.ObjectKeyFromObject(old), old); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Delete(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	waitCoverage(t, "a new VolumeCoverage", func(c *v1.VolumeCoverage) error {
		if c.UID == old.UID {
			return fmt.Errorf("still the deleted one")
		}
		return nil
	})
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// runningPod creates a pod bound to node and marks it Running, as a kubelet would.
func runningPod(t *testing.T, ns, name, node string, vols ...corev1.Volume) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, Volumes: vols, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	create(t, pod)
	pod.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(t.Context(), pod); err != nil {
		t.Fatalf("marking pod %s Running: %v", name, err)
	}
	return pod
}

func patchLabels(t *testing.T, obj client.Object, labels map[string]string) {
	t.Helper()
	patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"metadata":{"labels":{"touch":%q}}}`, labels["touch"]))
	if err := env.Client.Patch(t.Context(), obj, patch); err != nil {
		t.Fatal(err)
	}
}

// waitCoverage waits until the VolumeCoverage exists, has been computed and passes
// check, and returns it.
func waitCoverage(t *testing.T, what string, check func(*v1.VolumeCoverage) error) *v1.VolumeCoverage {
	t.Helper()
	cov := &v1.VolumeCoverage{}
	testenv.Eventually(t, what, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: v1.VolumeCoverageName}, cov); err != nil {
			return err
		}
		if cov.Status.LastComputedTime == nil {
			return fmt.Errorf("not computed yet")
		}
		return check(cov)
	})
	return cov
}

// computedAfter makes n more computations happen after since, calling touch before
// waiting for each.
func computedAfter(t *testing.T, since *metav1.Time, n int, touch func(int)) {
	t.Helper()
	last := since
	for i := range n {
		touch(i)
		cov := waitCoverage(t, fmt.Sprintf("computation %d after %s", i+1, last), func(c *v1.VolumeCoverage) error {
			if !c.Status.LastComputedTime.After(last.Time) {
				return fmt.Errorf("last computed at %s", c.Status.LastComputedTime)
			}
			return nil
		})
		last = cov.Status.LastComputedTime
	}
}

func nsCoverage(c *v1.VolumeCoverage, ns string) v1.NamespaceCoverage {
	for _, n := range c.Status.Namespaces {
		if n.Namespace == ns {
			return n
		}
	}
	return v1.NamespaceCoverage{}
}

func hasExample(reasons []v1.CoverageReason, reason, example string) bool {
	for _, r := range reasons {
		if r.Reason == reason && slices.Contains(r.Examples, example) {
			return true
		}
	}
	return false
}

// gauge reads one series from controller-runtime's registry, as a scrape would.
func gauge(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering the metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsAre(m, labels) {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func labelsAre(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, l := range m.GetLabel() {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func findEvent(t *testing.T, obj client.Object, typ, reason string) *corev1.Event {
	t.Helper()
	var list corev1.EventList
	if err := env.Client.List(t.Context(), &list, client.InNamespace(obj.GetNamespace())); err != nil {
		t.Fatal(err)
	}
	var found *corev1.Event
	for i := range list.Items {
		ev := &list.Items[i]
		if ev.InvolvedObject.Name == obj.GetName() && ev.Reason == reason && ev.Type == typ {
			if found != nil {
				t.Errorf("two %s events on %s: %q and %q", reason, obj.GetName(), found.Message, ev.Message)
			}
			found = ev
		}
	}
	return found
}

// waitEvent waits for the event the manager writes on the claim.
func waitEvent(t *testing.T, obj client.Object, typ, reason string) {
	t.Helper()
	testenv.Eventually(t, "event "+reason+" on "+obj.GetName(), func() error {
		var list corev1.EventList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.Name == obj.GetName() && ev.Reason == reason && ev.Type == typ {
				return nil
			}
		}
		return fmt.Errorf("no %s event among %d", reason, len(list.Items))
	})
}

// A burst of changes is one computation per interval: a request that comes sooner
// waits for the rest of the interval instead of computing again.
func TestReconcileDebounce(t *testing.T) {
	e := testenv.Require(t, env)
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	r := &VolumeCoverageReconciler{Client: e.Client, Engine: engine, Recorder: events.NewFakeRecorder(1000),
		Options: Options{Interval: 30 * time.Second, Clock: clk}}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: v1.VolumeCoverageName}}
	reconcile := func(what string, want time.Duration) {
		t.Helper()
		res, err := r.Reconcile(t.Context(), req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.RequeueAfter != want {
			t.Errorf("%s: RequeueAfter %s, want %s", what, res.RequeueAfter, want)
		}
	}
	reconcile("first request computes", resync)
	clk.SetTime(clk.Now().Add(10 * time.Second))
	reconcile("a request 10s later waits", 20*time.Second)
	reconcile("and another", 20*time.Second)
	clk.SetTime(clk.Now().Add(20 * time.Second))
	reconcile("a request once the interval passed computes", resync)
}

// There is one VolumeCoverage: the API server refuses any other name.
func TestOnlyOneVolumeCoverage(t *testing.T) {
	e := testenv.Require(t, env)
	err := e.Client.Create(t.Context(), &v1.VolumeCoverage{ObjectMeta: metav1.ObjectMeta{Name: "mine"}})
	if err == nil || !strings.Contains(err.Error(), "there is one VolumeCoverage and it is named cluster") {
		t.Errorf("creating VolumeCoverage mine: %v, want the name rule's refusal", err)
	}
}

// More claims become unprotected at once than one computation tells (maxEventsPerPass):
// the computation comes back an interval later for the rest, not at the resync ten
// minutes on, and every claim is told.
func TestEveryUnprotectedClaimIsToldSoon(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	var vols []corev1.Volume
	for i := range maxEventsPerPass + 5 {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("told-%d", i)},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		create(t, pvc)
		vols = append(vols, claimVol(pvc.Name, pvc.Name))
	}
	pod := runningPod(t, ns, "many", "node-"+ns, vols...)
	// Its claims, unbound, are not counted once no pod mounts them: later tests see a
	// cluster without them.
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })

	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	const interval = 30 * time.Second
	clk := clocktesting.NewFakePassiveClock(time.Now())
	rec := events.NewFakeRecorder(10000)
	r := &VolumeCoverageReconciler{Client: e.Client, Engine: engine, Recorder: rec, Options: Options{Interval: interval, Clock: clk}}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: v1.VolumeCoverageName}}
	res, err := r.Reconcile(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != interval {
		t.Fatalf("with claims left untold, RequeueAfter %s, want the interval %s", res.RequeueAfter, interval)
	}
	for pass := 0; res.RequeueAfter != resync; pass++ {
		if pass == 20 {
			t.Fatalf("claims still untold after %d computations", pass)
		}
		clk.SetTime(clk.Now().Add(res.RequeueAfter))
		if res, err = r.Reconcile(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	told := map[string]bool{}
	for len(rec.Events) > 0 {
		ev := <-rec.Events
		if _, rest, ok := strings.Cut(ev, "protects claim told-"); ok {
			told[strings.Fields(rest)[0]] = true
		}
	}
	if len(told) != maxEventsPerPass+5 {
		t.Errorf("%d of the %d claims told unprotected", len(told), maxEventsPerPass+5)
	}
}
