package coverage

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

var epoch = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func testPod(ns, name string, age int, vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name),
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(-age) * time.Minute))},
		Spec:   corev1.PodSpec{NodeName: "node-1", Volumes: vols},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func claimVol(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

func hostPath(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}}
}

func configMap(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}}
}

func testClaim(ns, name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
}

func ownedBy(pod *corev1.Pod, kind, name string) *corev1.Pod {
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID(name), Controller: new(true)}}
	return pod
}

func compile(t testing.TB, e *celpolicy.Engine, name, volumes, exclude string) Policy {
	t.Helper()
	sel, err := e.Compile(v1.VolumeSelector{Volumes: volumes})
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.CompileExclusion(exclude)
	if err != nil {
		t.Fatal(err)
	}
	return Policy{Name: name, Selector: sel, Exclusion: x}
}

// stateOf maps <namespace><source> to state/policy/reason.
func stateOf(res *Result) map[string]string {
	out := map[string]string{}
	for _, v := range res.Volumes {
		out[v.Namespace+v.Source] = fmt.Sprintf("%s %s %s", v.State, v.Policy, v.Reason)
	}
	return out
}

func TestCompute(t *testing.T) {
	e, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}
	pending := testPod("shop", "pending", 1, claimVol("data", "queue"))
	pending.Status.Phase = corev1.PodPending
	done := testPod("shop", "done", 1, claimVol("data", "results"))
	done.Status.Phase = corev1.PodSucceeded
	// Holdfast's own agent: its hostPath (the kubelet root) is not counted.
	agent := testPod("holdfast-system", "holdfast-agent-x7k2p", 1, hostPath("kubelet"), emptyDir("work"), claimVol("backups", "backups"))
	agent.Labels = map[string]string{"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}
	pods := []*corev1.Pod{
		testPod("shop", "db-0", 10, claimVol("data", "db"), configMap("conf")),
		testPod("shop", "db-reader", 5, claimVol("data", "db")), // the same claim, counted once
		testPod("shop", "tool", 1, claimVol("data", "scratch"), emptyDir("tmp"), hostPath("logs")),
		ownedBy(testPod("shop", "web-a", 3, emptyDir("cache"), emptyDir("state")), "ReplicaSet", "web-1"),
		ownedBy(testPod("shop", "web-b", 2, emptyDir("cache"), emptyDir("state")), "ReplicaSet", "web-1"),
		pending, done,
		testPod("other", "app", 1, emptyDir("work")),
		agent,
	}
	claims := []*corev1.PersistentVolumeClaim{testClaim("shop", "db"), testClaim("shop", "scratch"), testClaim("shop", "queue"),
		testClaim("shop", "results"), testClaim("shop", "archive"), testClaim("shop", "old-logs"), testClaim("other", "loose"),
		testClaim("holdfast-system", "backups")}
	unbound := testClaim("other", "unbound")
	unbound.Status.Phase = corev1.ClaimPending
	claims = append(claims, unbound)
	rs := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "web", Controller: new(true)}}}}
	system := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "holdfast-system"}}
	cluster := policyctrl.NewCluster([]*corev1.Namespace{shop, other, system}, pods, claims, []*metav1.PartialObjectMetadata{rs}, nil)

	// gold selects the claims db, queue and archive, the hostPath and the state
	// emptyDirs; caches selects nothing and excludes the cache and state emptyDirs
	// and the claim old-logs; paused would back up scratch but is suspended.
	gold := compile(t, e, "gold", `namespace.metadata.name == "shop" && (volume.name in ["logs", "state"] || (pvc != null && pvc.metadata.name in ["db", "queue", "archive"]))`, "")
	caches := compile(t, e, "caches", `false`, `volume.name in ["cache", "state"] || (pvc != null && pvc.metadata.name == "old-logs")`)
	paused := compile(t, e, "paused", `pvc != null && pvc.metadata.name == "scratch"`, "")
	paused.Suspended = true
	broken := Policy{Name: "broken", Problem: "spec.selector.volumes: compilation failed"}

	res := Compute(Input{Cluster: cluster, Policies: []Policy{paused, gold, caches, broken}, OperatorNamespace: "holdfast-system"})
	want := map[string]string{
		"shop/pvc/db":               "Protected gold ",
		"shop/pvc/scratch":          "Skipped paused Suspended",
		"shop/pod/tool/tmp":         "Unprotected  ",
		"shop/pod/tool/logs":        "Skipped gold HostPath",
		"shop/deployment/web/cache": "Excluded caches ",
		"shop/deployment/web/state": "Protected gold ", // protected wins over excluded
		"shop/pvc/queue":            "Skipped gold PodNotRunning",
		"shop/pvc/results":          "Unprotected  ",   // only a finished pod mounts it
		"shop/pvc/archive":          "Protected gold ", // no pod: a reader pod backs it up
		"shop/pvc/old-logs":         "Excluded caches ",
		"other/pod/app/work":        "Unprotected  ",
		"other/pvc/loose":           "Unprotected  ",
	}
	got := stateOf(res)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d volumes, want %d (configMaps, the unbound claim, Holdfast's agent and nothing else left out): %v", len(got), len(want), got)
	}
	// The claim db is backed up once, through its oldest pod; the Deployment's state
	// volume once per replica, each on its node.
	if n := res.ProtectedOnNode["node-1"]; n != 3 {
		t.Errorf("protected volumes on node-1 = %d, want 3 (claim db once, state of web-a and web-b)", n)
	}
	for _, v := range res.Volumes {
		if v.Source == "/pvc/db" && v.Pod != "db-0" {
			t.Errorf("claim db is shown through pod %s, want the oldest, db-0", v.Pod)
		}
	}
	if len(res.Problems) != 1 {
		t.Errorf("problems = %v, want the broken policy", res.Problems)
	}
}

// A claim no live pod mounts is Protected by a policy whose claimsWithoutPods is
// Backup (the default: a reader pod backs it up), Skipped NotMounted by one whose is
// Skip; a reader pod that mounts it does not make it a pod volume, and a selector
// that needs the pod does not pick it.
func TestComputeClaimsWithoutPods(t *testing.T) {
	e, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	reader := testPod("shop", "archive-reader-0123456789", 1, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "archive", ReadOnly: true}}})
	reader.Labels = map[string]string{v1.LabelManagedBy: v1.ManagedByValue, policyctrl.LabelComponent: policyctrl.ComponentReader}
	claims := []*corev1.PersistentVolumeClaim{testClaim("shop", "archive"), testClaim("shop", "kept")}
	cluster := policyctrl.NewCluster([]*corev1.Namespace{ns}, []*corev1.Pod{reader}, claims, nil, nil)
	for _, tt := range []struct {
		mode     v1.ClaimsWithoutPods
		selector string
		want     string
	}{
		{"", `pvc != null`, "Protected p "},
		{v1.ClaimsWithoutPodsBackup, `pvc != null`, "Protected p "},
		{v1.ClaimsWithoutPodsSkip, `pvc != null`, "Skipped p NotMounted"},
		{v1.ClaimsWithoutPodsBackup, `pod.metadata.name != ""`, "Unprotected  "},
	} {
		p := compile(t, e, "p", tt.selector, "")
		p.ClaimsWithoutPods = tt.mode
		got := stateOf(Compute(Input{Cluster: cluster, Policies: []Policy{p}}))
		for _, k := range []string{"shop/pvc/archive", "shop/pvc/kept"} {
			if got[k] != tt.want {
				t.Errorf("%q %s: %s = %q, want %q", tt.mode, tt.selector, k, got[k], tt.want)
			}
		}
		if len(got) != 2 {
			t.Errorf("%q: got %v, want only the two claims (not the reader pod's volume)", tt.mode, got)
		}
	}
}

// An exclusion that fails on a volume does not hide it: it stays unprotected, and
// the failure is reported.
func TestComputeExclusionErrorDoesNotExclude(t *testing.T) {
	e, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	cluster := policyctrl.NewCluster([]*corev1.Namespace{ns}, []*corev1.Pod{testPod("shop", "tool", 1, emptyDir("tmp"))}, nil, nil, nil)
	p := compile(t, e, "p", "false", `pod.metadata.labels["tier"] == "cache"`)
	res := Compute(Input{Cluster: cluster, Policies: []Policy{p}})
	if got := stateOf(res)["shop/pod/tool/tmp"]; got != "Unprotected  " {
		t.Errorf("got %q, want Unprotected", got)
	}
	if len(res.Problems) != 1 {
		t.Errorf("problems = %v, want the failed exclusion", res.Problems)
	}
}
