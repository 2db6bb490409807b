package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// workload creates the objects of one test namespace: a bare pod with every kind of
// volume, a Deployment's pod (through its ReplicaSet), a StatefulSet pod, a pod without
// a node and one not running yet. There is no kubelet: the test sets the pods' node
// and phase itself.
type workload struct {
	t   *testing.T
	e   *testenv.Env
	ctx context.Context
	ns  string
}

func (w *workload) create(obj client.Object) {
	w.t.Helper()
	if err := w.e.Client.Create(w.ctx, obj); err != nil {
		w.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (w *workload) pod(name, node string, phase corev1.PodPhase, owner *metav1.OwnerReference, vols ...corev1.Volume) *corev1.Pod {
	w.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: corev1.PodSpec{NodeName: node, Volumes: vols, ServiceAccountName: "default",
			Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	w.create(pod)
	if phase != "" {
		pod.Status.Phase = phase
		if err := w.e.Client.Status().Update(w.ctx, pod); err != nil {
			w.t.Fatalf("setting the phase of pod %s: %v", name, err)
		}
	}
	return pod
}

func (w *workload) claim(name string, mode corev1.PersistentVolumeMode) {
	w.create(&corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  &mode, StorageClassName: new("fast"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: mustQuantity("1Gi")}},
		},
	})
}

func controllerRef(kind, name string, uid string) *metav1.OwnerReference {
	apiVersion := "apps/v1"
	return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: typesUID(uid), Controller: new(true)}
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

func claimVol(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

// setUp creates the mixed workload and returns the volumes the policy must select
// (namespace/pod/volume -> node and source path).
func setUp(t *testing.T, e *testenv.Env, ctx context.Context, labels map[string]string) (*workload, map[string][2]string) {
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, labels)}
	w.claim("data", corev1.PersistentVolumeFilesystem)
	w.claim("raw", corev1.PersistentVolumeBlock)
	w.claim("data-db-0", corev1.PersistentVolumeFilesystem)

	w.pod("debug", "node-a", corev1.PodRunning, nil,
		emptyDir("scratch"),
		claimVol("data", "data"),
		claimVol("raw", "raw"),
		claimVol("ghost", "no-such-claim"),
		corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}},
		corev1.Volume{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		corev1.Volume{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
		corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}},
		corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
		corev1.Volume{Name: "bundle", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}}}}},
	)

	// A Deployment's pod: the pod's controller is a ReplicaSet whose controller is the
	// Deployment; the source identity names the Deployment.
	replicas := int32(1)
	labelsWeb := map[string]string{"app": "web"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labelsWeb},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: w.ns},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labelsWeb}, Template: tmpl}}
	w.create(dep)
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5d8f7", Namespace: w.ns,
		OwnerReferences: []metav1.OwnerReference{*controllerRef("Deployment", "web", string(dep.UID))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labelsWeb}, Template: tmpl}}
	w.create(rs)
	w.pod("web-5d8f7-x9k2p", "node-b", corev1.PodRunning, controllerRef("ReplicaSet", rs.Name, string(rs.UID)), emptyDir("cache"))

	// A StatefulSet's pod: its claim by name, its emptyDir by set and ordinal.
	w.pod("db-0", "node-a", corev1.PodRunning, controllerRef("StatefulSet", "db", "4b0b1f4e-0000-4000-8000-000000000001"),
		claimVol("data", "data-db-0"), emptyDir("tmp"))

	w.pod("unscheduled", "", "", nil, emptyDir("tmp"))
	w.pod("starting", "node-c", corev1.PodPending, nil, emptyDir("tmp"))

	want := map[string][2]string{
		w.ns + "/debug/scratch":         {"node-a", "/pod/debug/scratch"},
		w.ns + "/debug/data":            {"node-a", "/pvc/data"},
		w.ns + "/web-5d8f7-x9k2p/cache": {"node-b", "/deployment/web/cache"},
		w.ns + "/db-0/data":             {"node-a", "/pvc/data-db-0"},
		w.ns + "/db-0/tmp":              {"node-a", "/statefulset/db/0/tmp"},
	}
	return w, want
}

func newPolicy(name, ns string) *v1.VolumeBackupPolicy {
	return &v1.VolumeBackupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.VolumeBackupPolicySpec{
			Selector:        v1.VolumeSelector{Namespaces: fmt.Sprintf("namespace.metadata.name == %q", ns)},
			StorageLocation: "default",
		},
	}
}

func getPolicy(t *testing.T, e *testenv.Env, ctx context.Context, name string) *v1.VolumeBackupPolicy {
	t.Helper()
	p := &v1.VolumeBackupPolicy{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		t.Fatalf("getting policy %s: %v", name, err)
	}
	return p
}

func kstatusOf(t *testing.T, p *v1.VolumeBackupPolicy) *status.Result {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func backupsOf(t *testing.T, e *testenv.Env, ctx context.Context, ns string, labels client.MatchingLabels) []v1.PodVolumeBackup {
	t.Helper()
	var list v1.PodVolumeBackupList
	if err := e.Client.List(ctx, &list, client.InNamespace(ns), labels); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// checkBackups compares a run's PodVolumeBackups with the expected volumes.
func checkBackups(pvbs []v1.PodVolumeBackup, want map[string][2]string, p *v1.VolumeBackupPolicy, run string) error {
	got := map[string][2]string{}
	for _, b := range pvbs {
		got[b.Namespace+"/"+b.Spec.Pod.Name+"/"+b.Spec.Volume] = [2]string{b.Spec.Node, b.Spec.SourcePath}
		if b.Labels[v1.LabelRun] != run || b.Labels[v1.LabelPolicy] != p.Name ||
			b.Labels[v1.LabelStorageLocation] != "default" || b.Labels[v1.LabelManagedBy] != v1.ManagedByValue {
			return fmt.Errorf("PodVolumeBackup %s has labels %v", b.Name, b.Labels)
		}
		if b.Spec.Repository != "default-kopia" || b.Spec.Uploader != v1.UploaderKopia || b.Spec.Pod.UID == "" {
			return fmt.Errorf("PodVolumeBackup %s spec %+v", b.Name, b.Spec)
		}
	}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
		return fmt.Errorf("PodVolumeBackups (pod/volume -> node, source):\n got %v\nwant %v", sorted(got), sorted(want))
	}
	return nil
}

func sorted(m map[string][2]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+" -> "+v[0]+" "+v[1])
	}
	sort.Strings(out)
	return out
}

// A user commits a policy for a namespace with a mix of workloads: the status shows
// what is selected and why the rest is skipped, kstatus reads it as Current, and a
// run-now token backs up exactly the selected volumes on the right nodes.
func TestSelectionSkipReasonsAndRunNow(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w, want := setUp(t, e, ctx, nil)

	p := newPolicy("mix-"+w.ns, w.ns)
	w.create(p)

	wantSkipped := map[string]int32{
		SkipHostPath: 1, SkipSecret: 1, SkipConfigMap: 1, SkipDownwardAPI: 1, SkipServiceAccountToken: 1,
		SkipProjected: 1, SkipBlockMode: 1, SkipClaimNotFound: 1, SkipNoNode: 1, SkipPodNotRunning: 1,
	}
	eventually(t, "selection in status", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		st := p.Status
		if st.ObservedGeneration != p.Generation || st.SelectedVolumes != int32(len(want)) || st.SelectedNamespaces != 1 || st.SkippedVolumes != 10 {
			return fmt.Errorf("status: observed %d/%d, %d volumes in %d namespaces, %d skipped %+v",
				st.ObservedGeneration, p.Generation, st.SelectedVolumes, st.SelectedNamespaces, st.SkippedVolumes, st.Skipped)
		}
		got := map[string]int32{}
		for _, s := range st.Skipped {
			got[s.Reason] = s.Count
		}
		if fmt.Sprint(got) != fmt.Sprint(wantSkipped) {
			return fmt.Errorf("skipped %v, want %v", got, wantSkipped)
		}
		return nil
	})
	for _, s := range p.Status.Skipped {
		if s.Reason == SkipHostPath && (len(s.Examples) != 1 || s.Examples[0] != w.ns+"/debug/host") {
			t.Errorf("HostPath examples = %v", s.Examples)
		}
	}
	if res := kstatusOf(t, p); res.Status != status.CurrentStatus {
		t.Errorf("kstatus = %s (%s), want Current", res.Status, res.Message)
	}
	if p.Status.LastRun != nil || p.Status.NextScheduleTime != nil {
		t.Errorf("a policy without schedule or token ran: %+v", p.Status)
	}

	// Run now, as a Git commit would: set the annotation to a new value.
	patch := client.MergeFrom(p.DeepCopy())
	p.Annotations = map[string]string{v1.AnnotationRunNow: "commit-1"}
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	var run string
	eventually(t, "the run-now run", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRunNowToken != "commit-1" || p.Status.LastRun == nil {
			return fmt.Errorf("token %q, last run %+v", p.Status.LastRunNowToken, p.Status.LastRun)
		}
		run = p.Status.LastRun.Name
		if p.Status.LastRun.Trigger != TriggerRunNow {
			return fmt.Errorf("trigger %q", p.Status.LastRun.Trigger)
		}
		return checkBackups(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run}), want, p, run)
	})
	repo := &v1.BackupRepository{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: "default-kopia"}, repo); err != nil {
		t.Fatalf("the run did not create the namespace's BackupRepository: %v", err)
	}
	if repo.Spec.StorageLocation != "default" || repo.Spec.Uploader != v1.UploaderKopia {
		t.Errorf("BackupRepository spec = %+v", repo.Spec)
	}

	// The agent (played by the test) finishes the backups; the run's outcome follows.
	pvbs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})
	for i := range pvbs {
		b := &pvbs[i]
		b.Status.Phase, b.Status.BytesUploaded = v1.RunCompleted, 100
		if strings.HasSuffix(b.Spec.SourcePath, "/cache") {
			b.Status.Phase, b.Status.Message = v1.RunFailed, "the volume directory is missing on node-b"
		}
		b.Status.CompletionTime = &metav1.Time{Time: time.Now()}
		if err := e.Client.Status().Update(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the run's outcome", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Outcome != v1.RunOutcomePartiallyFailed || r.VolumesCompleted != 4 || r.VolumesFailed != 1 ||
			r.VolumesTotal != 5 || r.BytesUploaded != 500 || r.CompletionTime == nil {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})

	// A person sees the run in `kubectl describe`: events for its start and its end.
	eventually(t, "run events", func() error {
		var events corev1.EventList
		if err := e.Client.List(ctx, &events, client.InNamespace(metav1.NamespaceDefault)); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name == p.Name && strings.Contains(ev.Message, run) {
				seen[ev.Reason] = true
			}
		}
		if !seen["RunStarted"] || !seen["Run"+string(v1.RunOutcomePartiallyFailed)] {
			return fmt.Errorf("events seen: %v", seen)
		}
		return nil
	})

	// The same token again does nothing.
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	if p.Status.LastRun.Name != run {
		t.Errorf("the handled token started another run %s", p.Status.LastRun.Name)
	}
}

// A scheduled policy runs at the cron tick (driven by the test clock), once for many
// missed ticks, and does not start a second backup of a volume still in flight.
func TestScheduleTickAndInFlight(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w, want := setUp(t, e, ctx, map[string]string{"backup": "gold"})
	// Only emptyDirs of pods with a controller owner, and only gold namespaces.
	p := newPolicy("tick-"+w.ns, w.ns)
	p.Spec.Selector.Namespaces += ` && namespace.metadata.labels[?"backup"].orValue("") == "gold"`
	p.Spec.Selector.Volumes = `has(volume.emptyDir) && pod.metadata.?ownerReferences.orValue([]).exists(o, o.?controller.orValue(false))`
	p.Spec.Schedule = &v1.Schedule{Cron: "30 2 * * *", TimeZone: "Europe/Paris"}
	// The test clock starts no later than the policy's creation, so no tick is due yet
	// (an earlier test, or an earlier -count iteration, may have moved it forward).
	testClock.SetTime(time.Now().UTC().Truncate(time.Second))
	w.create(p)
	for k := range want {
		if !strings.HasSuffix(k, "/cache") && !strings.HasSuffix(k, "/db-0/tmp") {
			delete(want, k)
		}
	}

	var next time.Time
	eventually(t, "the next schedule time", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.NextScheduleTime == nil || p.Status.SelectedVolumes != 2 {
			return fmt.Errorf("next %v, %d volumes selected", p.Status.NextScheduleTime, p.Status.SelectedVolumes)
		}
		next = p.Status.NextScheduleTime.UTC()
		return nil
	})
	paris, _ := time.LoadLocation("Europe/Paris")
	if lt := next.In(paris); lt.Hour() != 2 || lt.Minute() != 30 {
		t.Errorf("next schedule %v is not 02:30 in Paris", lt)
	}
	if len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelPolicy: p.Name})) != 0 {
		t.Fatal("backups before the first tick")
	}

	// The tick passes; a change to the policy makes the controller look (in a cluster
	// the RequeueAfter would, but the test clock does not move the workqueue's timer).
	testClock.SetTime(next.Add(time.Second))
	poke(t, e, ctx, p.Name, "1")
	var run string
	eventually(t, "the scheduled run", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRun == nil || p.Status.LastScheduleTime == nil || !p.Status.LastScheduleTime.UTC().Equal(next) {
			return fmt.Errorf("last schedule %v, last run %+v", p.Status.LastScheduleTime, p.Status.LastRun)
		}
		run = p.Status.LastRun.Name
		if p.Status.LastRun.Trigger != TriggerSchedule {
			return fmt.Errorf("trigger %q", p.Status.LastRun.Trigger)
		}
		return checkBackups(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run}), want, p, run)
	})

	// Three days pass with the backups still running (the manager was down): one run
	// starts, for the latest tick, and it skips the volumes still in flight, so it
	// backs up nothing and is Failed, saying so.
	testClock.SetTime(next.Add(72*time.Hour + time.Minute))
	poke(t, e, ctx, p.Name, "2")
	eventually(t, "one catch-up run with InFlight skips", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Name == run || !p.Status.LastScheduleTime.UTC().Equal(next.Add(72*time.Hour)) {
			return fmt.Errorf("last schedule %v, last run %+v", p.Status.LastScheduleTime, r)
		}
		if r.VolumesSkipped != 2 || r.VolumesTotal != 0 {
			return fmt.Errorf("last run %+v, want both volumes skipped as InFlight", r)
		}
		// A run that protected nothing does not pass for a success.
		if r.Outcome != v1.RunOutcomeFailed || !strings.Contains(r.Message, "the 2 selected volumes were all skipped") {
			return fmt.Errorf("last run %+v, want Failed: all skipped", r)
		}
		for _, s := range p.Status.Skipped {
			if s.Reason == SkipInFlight && s.Count == 2 {
				return nil
			}
		}
		return fmt.Errorf("skipped %+v, want InFlight 2", p.Status.Skipped)
	})
	runs := map[string]bool{}
	for _, b := range backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelPolicy: p.Name}) {
		runs[b.Labels[v1.LabelRun]] = true
	}
	if len(runs) != 1 {
		t.Errorf("backups of %d runs, want only the first run's (the catch-up run skipped everything): %v", len(runs), runs)
	}
}

func poke(t *testing.T, e *testenv.Env, ctx context.Context, name, value string) {
	t.Helper()
	p := getPolicy(t, e, ctx, name)
	patch := client.MergeFrom(p.DeepCopy())
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations["test.holdfast.dev/poke"] = value
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
}

// A policy whose storage location is not usable backs nothing up, and says so: a
// location that was never probed holds the run until it is; one that is not Ready (or
// missing) makes the run fail at once with the location's own sentence, no backup is
// created, and the policy is Ready=False until the location recovers.
func TestRunsWaitForAndFailOnTheStorageLocation(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w, want := setUp(t, e, ctx, nil)
	loc := "store-" + w.ns
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: loc},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/backups"}}}
	w.create(bsl) // never probed: no Ready condition
	p := newPolicy("gated-"+w.ns, w.ns)
	p.Spec.StorageLocation = loc
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)

	eventually(t, "the run to wait for the first probe", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		c := meta(p, v1.ConditionReconciling)
		if c == nil || c.Reason != ReasonWaitingForStorageLocation || p.Status.SelectedVolumes != int32(len(want)) {
			return fmt.Errorf("conditions %+v, %d volumes", p.Status.Conditions, p.Status.SelectedVolumes)
		}
		return nil
	})
	if p.Status.LastRun != nil || p.Status.LastRunNowToken != "" {
		t.Fatalf("a run started before the location was probed: %+v (token %q)", p.Status.LastRun, p.Status.LastRunNowToken)
	}

	// The probe fails: the waiting run fails with the location's sentence.
	const sentence = "The store at 10.0.0.1:9000 rejected the credentials for bucket \"b\""
	setLocationReady(t, e, loc, metav1.ConditionFalse, "WrongCredentials", sentence)
	eventually(t, "the run to fail on the location", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Outcome != v1.RunOutcomeFailed || p.Status.LastRunNowToken != "first" {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
	r := p.Status.LastRun
	wantMsg := fmt.Sprintf("no volume was backed up: storage location %q is not Ready: %s", loc, sentence)
	if r.Message != wantMsg || r.VolumesTotal != 0 || r.VolumesSkipped != int32(len(want))+p.Status.SkippedVolumes || r.CompletionTime == nil {
		t.Errorf("last run %+v\nwant message %q", r, wantMsg)
	}
	ready := meta(p, v1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != ReasonStorageLocationNotReady || !strings.Contains(ready.Message, sentence) {
		t.Errorf("Ready = %+v", ready)
	}
	if got := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelPolicy: p.Name}); len(got) != 0 {
		t.Errorf("%d PodVolumeBackups created for a run that could not start", len(got))
	}
	waitPolicyEvent(t, e, ctx, p.Name, "RunFailed", sentence)
	// The failed run stays failed on later passes (nothing recounts it as in progress).
	w.pod("late", "node-a", corev1.PodRunning, nil, emptyDir("tmp"))
	eventually(t, "the new pod selected", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.SelectedVolumes != int32(len(want))+1 {
			return fmt.Errorf("%d volumes", p.Status.SelectedVolumes)
		}
		return nil
	})
	if p.Status.LastRun.Outcome != v1.RunOutcomeFailed || p.Status.LastRun.Message != wantMsg {
		t.Errorf("the failed run changed: %+v", p.Status.LastRun)
	}

	// The location recovers: the policy is Ready and the next run backs up.
	setLocationReady(t, e, loc, metav1.ConditionTrue, "Probed", "probed")
	eventually(t, "Ready again", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if c := meta(p, v1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})
	patch := client.MergeFrom(p.DeepCopy())
	p.Annotations[v1.AnnotationRunNow] = "second"
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the second run's backups", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || p.Status.LastRunNowToken != "second" || r.Message != "" {
			return fmt.Errorf("last run %+v", r)
		}
		if n := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: r.Name})); n != len(want)+1 {
			return fmt.Errorf("%d PodVolumeBackups", n)
		}
		return nil
	})

	// A location that does not exist fails the run just as clearly.
	patch = client.MergeFrom(p.DeepCopy())
	p.Spec.StorageLocation = "absent-" + w.ns
	p.Annotations[v1.AnnotationRunNow] = "third"
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third run to fail", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || p.Status.LastRunNowToken != "third" || r.Outcome != v1.RunOutcomeFailed {
			return fmt.Errorf("last run %+v", r)
		}
		if want := fmt.Sprintf("storage location %q does not exist", "absent-"+w.ns); !strings.Contains(r.Message, want) {
			return fmt.Errorf("message %q lacks %q", r.Message, want)
		}
		return nil
	})
}

// TestAnEndedRunIsNotReopenedWhenItsBackupsGo: a run ended, then its backups went with
// their namespace, deleted by mistake, and the namespace and its application were
// applied again at once. The run stays as it ended (its summary is history): it is not
// counted again to nothing, not reopened, and it does not back up the new pod under its
// old name; the next run does.
func TestAnEndedRunIsNotReopenedWhenItsBackupsGo(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	old := w.pod("wiki-1", "node-a", corev1.PodRunning, nil, emptyDir("pages"))
	p := newPolicy("ended-"+w.ns, w.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)
	var run string
	eventually(t, "the run's backup", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRun == nil {
			return fmt.Errorf("no run yet")
		}
		run = p.Status.LastRun.Name
		if n := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})); n != 1 {
			return fmt.Errorf("%d backups of run %s", n, run)
		}
		return nil
	})
	pvb := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})[0]
	pvb.Status.Phase, pvb.Status.BytesUploaded, pvb.Status.CompletionTime = v1.RunCompleted, 100, &metav1.Time{Time: time.Now()}
	if err := e.Client.Status().Update(ctx, &pvb); err != nil {
		t.Fatal(err)
	}
	ended := func(what string, selected int32) {
		t.Helper()
		eventually(t, what, func() error {
			p = getPolicy(t, e, ctx, p.Name)
			r := p.Status.LastRun
			if p.Status.SelectedVolumes != selected {
				return fmt.Errorf("%d volumes selected, want %d", p.Status.SelectedVolumes, selected)
			}
			if r == nil || r.Name != run || r.Outcome != v1.RunOutcomeSucceeded || r.VolumesTotal != 1 || r.VolumesCompleted != 1 {
				return fmt.Errorf("last run %+v, want run %s Succeeded with its 1 volume", r, run)
			}
			return nil
		})
	}
	ended("the run ended", 1)

	// The namespace's deletion takes the backup and the pod (envtest has no namespace
	// controller: the test deletes them).
	for _, o := range []client.Object{&pvb, old} {
		if err := e.Client.Delete(ctx, o, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	ended("the run as it ended, its backup gone", 0)
	// The application is applied again, within the run's first minute.
	w.pod("wiki-2", "node-a", corev1.PodRunning, nil, emptyDir("pages"))
	ended("the run as it ended, the new pod selected", 1)
	for _, b := range backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run}) {
		t.Errorf("the ended run %s backed up %s/%s", run, b.Spec.Pod.Name, b.Spec.Volume)
	}

	// The next run, an hour later, backs the new pod up.
	testClock.SetTime(testClock.Now().Add(time.Hour))
	patch := client.MergeFrom(p.DeepCopy())
	p.Annotations[v1.AnnotationRunNow] = "second"
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the next run's backup of the new pod", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRun == nil || p.Status.LastRun.Name == run {
			return fmt.Errorf("no next run yet")
		}
		bs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: p.Status.LastRun.Name})
		if len(bs) != 1 || bs[0].Spec.Pod.Name != "wiki-2" {
			return fmt.Errorf("backups of run %s: %d", p.Status.LastRun.Name, len(bs))
		}
		return nil
	})
}
