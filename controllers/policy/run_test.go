package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// completeBackups plays the agent: it marks the PodVolumeBackups Completed.
func completeBackups(t *testing.T, e *testenv.Env, ctx context.Context, pvbs []v1.PodVolumeBackup) {
	t.Helper()
	for i := range pvbs {
		b := &pvbs[i]
		b.Status.Phase, b.Status.BytesUploaded = v1.RunCompleted, 100
		b.Status.CompletionTime = &metav1.Time{Time: time.Now()}
		if err := e.Client.Status().Update(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

func setRunNow(t *testing.T, e *testenv.Env, ctx context.Context, name, token string) {
	t.Helper()
	p := getPolicy(t, e, ctx, name)
	patch := client.MergeFrom(p.DeepCopy())
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[v1.AnnotationRunNow] = token
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
}

// A run never reports success for a volume it did not back up (review H5). Namespace a
// has a ResourceQuota that allows no PodVolumeBackup; namespace b has none. The quota
// does not stop b's backups, a's creates are retried and reported while the run is
// creating, and once the creation window closes and b's backups complete, the run is
// PartiallyFailed with a's volumes counted as CreateFailed with the quota's message.
func TestARunCountsTheVolumesItCouldNotCreate(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	wa := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	wb := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	wa.denyBackups()
	for _, w := range []*workload{wa, wb} {
		w.pod("app-1", "node-a", corev1.PodRunning, nil, emptyDir("data"))
		w.pod("app-2", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	}
	p := newPolicy("quota-"+wa.ns, wa.ns)
	p.Spec.Selector.Namespaces = fmt.Sprintf("namespace.metadata.name in [%q, %q]", wa.ns, wb.ns)
	w := wa
	w.create(p)
	eventually(t, "four volumes selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 4 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	start := testClock.Now()
	setRunNow(t, e, ctx, p.Name, "quota-1")

	// b's backups are created although a's are refused, and the refusal is in status
	// while the run retries.
	var run string
	eventually(t, "b's backups and a's failures reported", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil {
			return fmt.Errorf("no run yet")
		}
		run = r.Name
		if n := len(backupsOf(t, e, ctx, wb.ns, client.MatchingLabels{v1.LabelRun: run})); n != 2 {
			return fmt.Errorf("%d backups in namespace b", n)
		}
		if r.Outcome != v1.RunOutcomeInProgress || r.CreationEndTime != nil || failuresOf(r, ReasonCreateFailed) != 2 {
			return fmt.Errorf("last run %+v, want creating with 2 CreateFailed", r)
		}
		if c := meta(p, v1.ConditionReconciling); c == nil || !strings.Contains(c.Message, "exceeded quota") {
			return fmt.Errorf("Reconciling = %+v, want the quota's message", c)
		}
		return nil
	})
	if n := len(backupsOf(t, e, ctx, wa.ns, client.MatchingLabels{v1.LabelRun: run})); n != 0 {
		t.Fatalf("%d backups in namespace a despite its quota", n)
	}

	// The agent completes b's backups; the run stays in progress while it may still
	// create a's.
	completeBackups(t, e, ctx, backupsOf(t, e, ctx, wb.ns, client.MatchingLabels{v1.LabelRun: run}))
	eventually(t, "b's backups counted", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.VolumesCompleted != 2 || r.Outcome != v1.RunOutcomeInProgress {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})

	// The creation window (no jitter: one minute of retries) closes.
	testClock.SetTime(start.Add(createGrace + time.Second))
	poke(t, e, ctx, p.Name, "window-closed")
	eventually(t, "the run's outcome", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r.Outcome != v1.RunOutcomePartiallyFailed || r.VolumesSelected != 4 || r.VolumesCompleted != 2 ||
			r.VolumesFailed != 2 || r.VolumesTotal != 2 || r.CreationEndTime == nil || r.CompletionTime == nil {
			return fmt.Errorf("last run %+v, want PartiallyFailed: 2 of 4 backed up, 2 CreateFailed", r)
		}
		return nil
	})
	r := p.Status.LastRun
	if len(r.Failures) != 1 || r.Failures[0].Reason != ReasonCreateFailed || r.Failures[0].Count != 2 || len(r.Failures[0].Examples) != 2 {
		t.Fatalf("failures %+v", r.Failures)
	}
	for _, ex := range r.Failures[0].Examples {
		if !strings.HasPrefix(ex, wa.ns+"/app-") || !strings.Contains(ex, "exceeded quota: no-backups") {
			t.Errorf("example %q does not name a's volume and the quota", ex)
		}
	}
	if !strings.Contains(r.Message, "2 of 4 selected volumes were not backed up: 2 CreateFailed") {
		t.Errorf("message %q", r.Message)
	}
	// `kubectl describe vbp` shows why: a warning event names the failures.
	waitPolicyEvent(t, e, ctx, p.Name, "RunPartiallyFailed", "CreateFailed")
}

// Two run-now tokens in the same second are two runs, and the second backs up
// (review L9).
func TestTwoRunNowTokensInOneSecondAreTwoRuns(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	p := newPolicy("twice-"+w.ns, w.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)
	var first string
	eventually(t, "the first run's backup", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r == nil {
			return fmt.Errorf("no run yet")
		}
		first = r.Name
		if n := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: first})); n != 1 {
			return fmt.Errorf("%d backups", n)
		}
		return nil
	})
	completeBackups(t, e, ctx, backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: first}))
	eventually(t, "the first run Succeeded", func() error {
		if r := getPolicy(t, e, ctx, p.Name).Status.LastRun; r.Outcome != v1.RunOutcomeSucceeded {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
	// The test clock has not moved: the second token comes in the same second.
	setRunNow(t, e, ctx, p.Name, "second")
	eventually(t, "the second run's own backup", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if p.Status.LastRunNowToken != "second" {
			return fmt.Errorf("token %q not handled yet", p.Status.LastRunNowToken)
		}
		if r.Name == first {
			return fmt.Errorf("the second token reused run %s", first)
		}
		if n := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: r.Name})); n != 1 {
			return fmt.Errorf("%d backups of run %s", n, r.Name)
		}
		return nil
	})
}

// A namespace expression that fails at runtime is seen in the policy's status and in
// an event (review M2), as docs/policies.md promises.
func TestNamespaceSelectorErrorsAreCountedAndReported(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	nsObj := &corev1.Namespace{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: w.ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(nsObj.DeepCopy())
	nsObj.Annotations = map[string]string{"tier": "gold"}
	if err := e.Client.Patch(ctx, nsObj, patch); err != nil {
		t.Fatal(err)
	}
	w.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	p := newPolicy("nserr-"+w.ns, w.ns)
	p.Spec.Selector.Namespaces = fmt.Sprintf(`namespace.metadata.name == %q && int(namespace.metadata.annotations[?"tier"].orValue("0")) > 1`, w.ns)
	w.create(p)
	eventually(t, "NamespaceSelectorError in status", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		for _, s := range p.Status.Skipped {
			if s.Reason == SkipNamespaceSelectorError && s.Count == 1 && len(s.Examples) == 1 && s.Examples[0] == w.ns+"/app/data" {
				return nil
			}
		}
		return fmt.Errorf("skipped %+v", p.Status.Skipped)
	})
	waitPolicyEvent(t, e, ctx, p.Name, "SelectorEvaluationFailed", "namespace "+w.ns)
}

// Names up to 253 characters work (review M8): a policy and a storage location with
// 100-character names get their PodVolumeBackups and BackupRepository, labelled with
// values that fit, and the run is counted from them.
func TestLongPolicyAndLocationNames(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	long := func(prefix string) string {
		name := prefix + "-" + w.ns + "-"
		return name + strings.Repeat("x", 100-len(name))
	}
	loc := long("store")
	setLocationReady(t, e, loc, metav1.ConditionTrue, "Probed", "probed")
	p := newPolicy(long("policy"), w.ns)
	if len(p.Name) != 100 || len(loc) != 100 {
		t.Fatalf("names of %d and %d characters", len(p.Name), len(loc))
	}
	p.Spec.StorageLocation = loc
	p.Annotations = map[string]string{v1.AnnotationRunNow: "long"}
	w.create(p)
	var pvbs []v1.PodVolumeBackup
	eventually(t, "the run's backup", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRun == nil {
			return fmt.Errorf("no run yet (conditions %+v)", p.Status.Conditions)
		}
		pvbs = backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelPolicy: identity.LabelValue(p.Name)})
		if len(pvbs) != 1 {
			return fmt.Errorf("%d backups; last run %+v", len(pvbs), p.Status.LastRun)
		}
		return nil
	})
	if got := pvbs[0].Labels[v1.LabelStorageLocation]; got != identity.LabelValue(loc) || pvbs[0].Spec.StorageLocation != loc {
		t.Errorf("backup labelled %q for location %q", got, pvbs[0].Spec.StorageLocation)
	}
	repo := &v1.BackupRepository{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: identity.RepositoryName(loc, v1.UploaderKopia)}, repo); err != nil {
		t.Fatalf("the BackupRepository of the long location: %v", err)
	}
	if repo.Labels[v1.LabelStorageLocation] != identity.LabelValue(loc) {
		t.Errorf("BackupRepository labels %v", repo.Labels)
	}
	completeBackups(t, e, ctx, pvbs)
	eventually(t, "the run Succeeded", func() error {
		if r := getPolicy(t, e, ctx, p.Name).Status.LastRun; r.Outcome != v1.RunOutcomeSucceeded || r.VolumesCompleted != 1 {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
}

// A backup that no agent will ever take does not block its volume (review M4): a pod
// for Windows is skipped with a reason instead of selected, and a volume whose backup
// on a node that went away was failed (by the manager's deadline, played here by the
// test) is backed up by the next run from the node its new pod runs on.
func TestStrandedAndWindowsVolumes(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	win := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "win-" + w.ns, Labels: map[string]string{labelOS: "windows"}}}
	w.create(win)
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), win) })
	w.pod("iis", win.Name, corev1.PodRunning, nil, emptyDir("logs"))
	winPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pending-iis", Namespace: w.ns},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{labelOS: "windows"}, Volumes: []corev1.Volume{emptyDir("logs")},
			Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	w.create(winPod)
	w.claim("data", corev1.PersistentVolumeFilesystem)
	old := w.pod("db-old", "gone", corev1.PodRunning, nil, claimVol("data", "data"))

	p := newPolicy("stranded-"+w.ns, w.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)
	var first string
	eventually(t, "the Windows pods skipped, the claim backed up on node gone", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.LastRun == nil {
			return fmt.Errorf("no run yet")
		}
		first = p.Status.LastRun.Name
		var windows int32
		for _, s := range p.Status.Skipped {
			if s.Reason == SkipWindows {
				windows = s.Count
			}
		}
		if windows != 2 || p.Status.SelectedVolumes != 1 {
			return fmt.Errorf("%d volumes selected, skipped %+v, want 1 and 2 Windows", p.Status.SelectedVolumes, p.Status.Skipped)
		}
		if pvbs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: first}); len(pvbs) != 1 || pvbs[0].Spec.Node != "gone" {
			return fmt.Errorf("backups of run %s: %+v", first, pvbs)
		}
		return nil
	})
	// No agent on node gone takes it; the manager's deadline fails it.
	pvb := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: first})[0]
	pvb.Status.Phase, pvb.Status.Message = v1.RunFailed, "no agent picked the backup up on node gone"
	pvb.Status.CompletionTime = &metav1.Time{Time: time.Now()}
	if err := e.Client.Status().Update(ctx, &pvb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first run Failed with the reason", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome != v1.RunOutcomeFailed || failuresOf(r, ReasonBackupFailed) != 1 {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
	// The pod is replaced on another node; the next run backs the claim up from there.
	if err := e.Client.Delete(ctx, old, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	w.pod("db-new", "node-b", corev1.PodRunning, nil, claimVol("data", "data"))
	testClock.SetTime(testClock.Now().Add(time.Hour))
	setRunNow(t, e, ctx, p.Name, "second")
	eventually(t, "the next run's backup on node-b", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Name == first {
			return fmt.Errorf("no second run yet")
		}
		pvbs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: r.Name})
		if len(pvbs) != 1 || pvbs[0].Spec.Node != "node-b" || pvbs[0].Spec.SourcePath != "/pvc/data" {
			return fmt.Errorf("backups of run %s: %d; skipped %+v", r.Name, len(pvbs), p.Status.Skipped)
		}
		return nil
	})
	for _, s := range p.Status.Skipped {
		if s.Reason == SkipInFlight {
			t.Errorf("the failed backup blocks its volume: %+v", s)
		}
	}
}

// A run that supersedes one still creating does not drop the volumes the first had
// not started (review H5): the new run backs them up and an event says so.
func TestASupersededRunLeavesNoVolumeBehind(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	for i := range 4 {
		w.pod(fmt.Sprintf("app-%d", i), "node-a", corev1.PodRunning, nil, emptyDir("data"))
	}
	p := newPolicy("superseded-"+w.ns, w.ns)
	p.Spec.Schedule = &v1.Schedule{Cron: "0 * * * *", Jitter: &metav1.Duration{Duration: 50 * time.Minute}}
	testClock.SetTime(time.Now().UTC().Truncate(time.Second))
	w.create(p)
	var next time.Time
	eventually(t, "the next schedule time", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.NextScheduleTime == nil || p.Status.SelectedVolumes != 4 {
			return fmt.Errorf("next %v, %d volumes", p.Status.NextScheduleTime, p.Status.SelectedVolumes)
		}
		next = p.Status.NextScheduleTime.UTC()
		return nil
	})
	testClock.SetTime(next.Add(time.Second))
	poke(t, e, ctx, p.Name, "tick")
	var scheduled string
	eventually(t, "the scheduled run creating over its jitter window", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Trigger != TriggerSchedule || r.CreationEndTime != nil {
			return fmt.Errorf("last run %+v", r)
		}
		scheduled = r.Name
		return nil
	})
	started := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: scheduled}))

	setRunNow(t, e, ctx, p.Name, "now")
	eventually(t, "the run-now run backs up what the scheduled run had not started", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil || r.Trigger != TriggerRunNow {
			return fmt.Errorf("last run %+v", r)
		}
		got := map[string]bool{}
		for _, run := range []string{scheduled, r.Name} {
			for _, b := range backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run}) {
				got[b.Spec.Pod.Name] = true
			}
		}
		if len(got) != 4 {
			return fmt.Errorf("volumes with a backup: %v, want all 4", got)
		}
		return nil
	})
	want := fmt.Sprintf("backs up the %d volumes it had not started", 4-started)
	waitPolicyEvent(t, e, ctx, p.Name, "RunSuperseded", want)
}

// A policy's spec.files reaches every PodVolumeBackup it creates, where the agent
// reads it and kubectl describe shows it, and stays as it was created; a policy
// without it creates backups without it (issue 16 item 4).
func TestPolicyFilesReachItsBackups(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	backupOf := func(w *workload, p *v1.VolumeBackupPolicy) *v1.PodVolumeBackup {
		t.Helper()
		w.create(p)
		var pvb *v1.PodVolumeBackup
		eventually(t, "the backup of policy "+p.Name, func() error {
			r := getPolicy(t, e, ctx, p.Name).Status.LastRun
			if r == nil {
				return fmt.Errorf("no run yet")
			}
			pvbs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: r.Name})
			if len(pvbs) != 1 {
				return fmt.Errorf("%d backups", len(pvbs))
			}
			pvb = &pvbs[0]
			return nil
		})
		return pvb
	}

	caches := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	caches.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	p := newPolicy("caches-"+caches.ns, caches.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "now"}
	p.Spec.Files = &v1.BackupFiles{ExcludeCaches: true}
	pvb := backupOf(caches, p)
	if pvb.Spec.Files == nil || !pvb.Spec.Files.ExcludeCaches {
		t.Fatalf("backup %s has spec.files %+v, want excludeCaches", pvb.Name, pvb.Spec.Files)
	}
	pvb.Spec.Files = nil
	if err := e.Client.Update(ctx, pvb); err == nil || !strings.Contains(err.Error(), "fixed at creation") {
		t.Errorf("removing spec.files of backup %s: %v, want it refused as fixed at creation", pvb.Name, err)
	}

	plain := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	plain.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	q := newPolicy("plain-"+plain.ns, plain.ns)
	q.Annotations = map[string]string{v1.AnnotationRunNow: "now"}
	if pvb := backupOf(plain, q); pvb.Spec.Files != nil {
		t.Errorf("backup %s of a policy without spec.files has spec.files %+v", pvb.Name, pvb.Spec.Files)
	}
}

// denyBackups gives w's namespace a ResourceQuota, "no-backups", that allows no
// PodVolumeBackup, with the usage a quota controller would write (envtest runs none).
func (w *workload) denyBackups() {
	w.t.Helper()
	w.deny("no-backups", "count/podvolumebackups.backup.holdfast.dev")
}

// denyRepositories does the same for BackupRepositories ("no-repositories").
func (w *workload) denyRepositories() {
	w.t.Helper()
	w.deny("no-repositories", "count/backuprepositories.backup.holdfast.dev")
}

func (w *workload) deny(name string, resource corev1.ResourceName) {
	w.t.Helper()
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{resource: mustQuantity("0")}}}
	w.create(quota)
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{resource: mustQuantity("0")}}
	if err := w.e.Client.Status().Update(w.ctx, quota); err != nil {
		w.t.Fatal(err)
	}
}
