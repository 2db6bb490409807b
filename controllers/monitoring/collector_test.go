package monitoring

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/metrics"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// series is one sample of a scrape.
type series struct {
	labels map[string]string
	value  float64
}

// scrape gathers controller-runtime's registry, which the manager serves on /metrics,
// and returns the samples of name whose labels include match.
func scrape(t *testing.T, name string, match map[string]string) []series {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering the metrics: %v", err)
	}
	var out []series
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			s := series{labels: map[string]string{}, value: value(m)}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			ok := true
			for k, v := range match {
				ok = ok && s.labels[k] == v
			}
			if ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// expect is what one series must be: its full label set and value; absent for a
// series that must not be there.
type expect struct {
	name   string
	labels map[string]string
	value  float64
	absent bool
}

// check compares a scrape with the expectations and says what differs.
func check(t *testing.T, want []expect) error {
	t.Helper()
	var diffs []string
	for _, w := range want {
		got := scrape(t, w.name, w.labels)
		switch {
		case w.absent && len(got) > 0:
			diffs = append(diffs, fmt.Sprintf("%s%v is there (%v), want none", w.name, w.labels, got[0].value))
		case w.absent:
		case len(got) != 1:
			diffs = append(diffs, fmt.Sprintf("%s%v: %d series, want 1", w.name, w.labels, len(got)))
		case !maps.Equal(got[0].labels, w.labels):
			diffs = append(diffs, fmt.Sprintf("%s: labels %v, want %v", w.name, got[0].labels, w.labels))
		case got[0].value != w.value:
			diffs = append(diffs, fmt.Sprintf("%s%v = %v, want %v", w.name, w.labels, got[0].value, w.value))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s", strings.Join(diffs, "\n"))
	}
	return nil
}

// at is a whole second on a fixed day, as the API server stores times.
func at(sec int) *metav1.Time {
	t := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, sec, 0, time.UTC))
	return &t
}

// backup is a PodVolumeBackup of a policy's run with the status the agent would have
// written.
type backup struct {
	name, source, claim, location string
	phase                         v1.RunPhase
	start, end                    int
	bytes, files, uploaded        int64
	// dropped flags the backup FilesDropped, as the manager does one that holds no
	// or very few files.
	dropped bool
}

func createBackup(t *testing.T, ns, policy string, b backup) *v1.PodVolumeBackup {
	t.Helper()
	ctx := t.Context()
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: b.name, Labels: map[string]string{v1.LabelPolicy: identity.LabelValue(policy)}},
		Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "app-0", UID: "uid-1"}, Volume: "data",
			ClaimName: b.claim, SourcePath: b.source, StorageLocation: b.location, Repository: b.location + "-kopia",
			Uploader: v1.UploaderKopia, Tags: map[string]string{identity.TagPolicy: policy}},
	}
	if err := env.Client.Create(ctx, pvb); err != nil {
		t.Fatal(err)
	}
	pvb.Status = v1.PodVolumeBackupStatus{Phase: b.phase, StartTime: at(b.start),
		Progress: v1.Progress{TotalBytes: b.bytes, BytesDone: b.bytes, TotalFiles: b.files, FilesDone: b.files}, BytesUploaded: b.uploaded}
	if isFinal(b.phase) {
		pvb.Status.CompletionTime = at(b.end)
	}
	if b.dropped {
		pvb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionFilesDropped, Status: metav1.ConditionTrue,
			Reason: v1.ReasonNoFiles, Message: "set by the test", LastTransitionTime: *at(b.end)}}
	}
	if err := env.Client.Status().Update(ctx, pvb); err != nil {
		t.Fatal(err)
	}
	return pvb
}

// createBackupAfter creates a backup whose creation time, by the API server's
// clock, is after the given one: creation times have whole seconds, so it creates
// the backup again until the server's clock has passed that second.
func createBackupAfter(t *testing.T, ns, policy string, b backup, after time.Time) *v1.PodVolumeBackup {
	t.Helper()
	var pvb *v1.PodVolumeBackup
	testenv.Eventually(t, "a backup created after "+after.String(), func() error {
		pvb = createBackup(t, ns, policy, b)
		if pvb.CreationTimestamp.After(after) {
			return nil
		}
		if err := env.Client.Delete(t.Context(), pvb); err != nil {
			t.Fatal(err)
		}
		return fmt.Errorf("created at %s", pvb.CreationTimestamp)
	})
	return pvb
}

func createPolicy(t *testing.T, name string, schedule *v1.Schedule) *v1.VolumeBackupPolicy {
	t.Helper()
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.VolumeBackupPolicySpec{StorageLocation: "loc", Schedule: schedule}}
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
	return p
}

func condition(typ string, status metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: "Test", Message: "set by the test", LastTransitionTime: *at(0)}
}

// TestVolumeSeriesFollowTheBackups: the per-volume series are what a volume's
// PodVolumeBackups say (the newest success, the newest final attempt, the failures
// since; newest by the API server's clock, and a backup flagged FilesDropped is no
// success), labelled with the volume's identity, and go with the backups.
func TestVolumeSeriesFollowTheBackups(t *testing.T) {
	env := testenv.Require(t, env)
	if collector.backups == nil {
		t.Error("the collector lists the PodVolumeBackups from the cache, copying each, rather than reading the informer's store")
	}
	ns := env.Namespace(t, nil)
	policy := "every-six-hours-" + ns
	createPolicy(t, policy, &v1.Schedule{Cron: "0 */6 * * *"})

	data := map[string]string{"namespace": ns, "source": "/pvc/data", "claim": "data", "policy": policy, "location": "loc"}
	for _, b := range []backup{
		{name: "old", phase: v1.RunCompleted, start: 0, end: 60, bytes: 1000, files: 10, uploaded: 1000},
		{name: "good", phase: v1.RunCompleted, start: 100, end: 130, bytes: 2000, files: 20, uploaded: 200},
		{name: "bad", phase: v1.RunFailed, start: 200, end: 210},
		{name: "stopped", phase: v1.RunCanceled, start: 300, end: 305},
		{name: "running", phase: v1.RunInProgress, start: 400},
	} {
		b.source, b.claim, b.location = "/pvc/data", "data", "loc"
		createBackup(t, ns, policy, b)
	}
	cache := map[string]string{"namespace": ns, "source": "/deployment/app/cache", "claim": "", "policy": policy, "location": "loc"}
	failing := createBackup(t, ns, policy, backup{name: "cache-bad", source: "/deployment/app/cache", location: "loc", phase: v1.RunFailed, start: 50, end: 55})
	// A volume whose only backup has not ended has its interval and nothing else.
	pending := map[string]string{"namespace": ns, "source": "/pod/tmp/scratch", "claim": "", "policy": policy, "location": "loc"}
	createBackup(t, ns, policy, backup{name: "first", source: "/pod/tmp/scratch", location: "loc", phase: v1.RunPending})

	testenv.Eventually(t, "the volume series", func() error {
		return check(t, []expect{
			{name: metrics.VolumeLastSuccessTimestamp, labels: data, value: float64(at(130).Unix())},
			{name: metrics.VolumeLastAttemptTimestamp, labels: data, value: float64(at(300).Unix())},
			{name: metrics.VolumeLastAttemptSuccess, labels: data, value: 0},
			{name: metrics.VolumeConsecutiveFailures, labels: data, value: 2},
			{name: metrics.VolumeLastBackupDuration, labels: data, value: 30},
			{name: metrics.VolumeLastBackupBytes, labels: data, value: 2000},
			{name: metrics.VolumeLastBackupUploadedBytes, labels: data, value: 200},
			{name: metrics.VolumeLastBackupFiles, labels: data, value: 20},
			{name: metrics.VolumeBackupInterval, labels: data, value: 6 * 3600},

			{name: metrics.VolumeLastAttemptTimestamp, labels: cache, value: float64(at(50).Unix())},
			{name: metrics.VolumeLastAttemptSuccess, labels: cache, value: 0},
			{name: metrics.VolumeConsecutiveFailures, labels: cache, value: 1},
			{name: metrics.VolumeLastSuccessTimestamp, labels: cache, absent: true},
			{name: metrics.VolumeLastBackupBytes, labels: cache, absent: true},

			{name: metrics.VolumeBackupInterval, labels: pending, value: 6 * 3600},
			{name: metrics.VolumeLastAttemptTimestamp, labels: pending, absent: true},
		})
	})

	// A success after the failures: the count starts again.
	createBackup(t, ns, policy, backup{name: "fixed", source: "/pvc/data", claim: "data", location: "loc", phase: v1.RunCompleted,
		start: 500, end: 560, bytes: 3000, files: 30, uploaded: 300})
	testenv.Eventually(t, "the series after a new success", func() error {
		return check(t, []expect{
			{name: metrics.VolumeLastSuccessTimestamp, labels: data, value: float64(at(560).Unix())},
			{name: metrics.VolumeLastAttemptSuccess, labels: data, value: 1},
			{name: metrics.VolumeConsecutiveFailures, labels: data, value: 0},
			{name: metrics.VolumeLastBackupDuration, labels: data, value: 60},
		})
	})

	// A volume whose backups are all gone takes its series with it.
	if err := env.Client.Delete(t.Context(), failing); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the series of a volume without backups go", func() error {
		if got := scrape(t, metrics.VolumeLastAttemptTimestamp, map[string]string{"namespace": ns, "source": "/deployment/app/cache"}); len(got) > 0 {
			return fmt.Errorf("still there: %v", got)
		}
		return check(t, []expect{{name: metrics.VolumeLastAttemptSuccess, labels: data, value: 1}})
	})

	// A Completed backup the manager flagged FilesDropped (it holds no files: the
	// volume was not mounted) is no success: the last success stays the good one, so
	// the stale alert ages it, and it counts as a failed attempt.
	empty := createBackup(t, ns, policy, backup{name: "empty", source: "/pvc/data", claim: "data", location: "loc", phase: v1.RunCompleted,
		start: 600, end: 610, dropped: true})
	testenv.Eventually(t, "the series after a backup flagged FilesDropped", func() error {
		return check(t, []expect{
			{name: metrics.VolumeLastSuccessTimestamp, labels: data, value: float64(at(560).Unix())},
			{name: metrics.VolumeLastAttemptTimestamp, labels: data, value: float64(at(600).Unix())},
			{name: metrics.VolumeLastAttemptSuccess, labels: data, value: 0},
			{name: metrics.VolumeConsecutiveFailures, labels: data, value: 1},
			{name: metrics.VolumeLastBackupDuration, labels: data, value: 60},
			{name: metrics.VolumeLastBackupBytes, labels: data, value: 3000},
			{name: metrics.VolumeLastBackupFiles, labels: data, value: 30},
		})
	})

	// Newer is by the API server's clock, as for retention and restores: a backup
	// created later is the newest even when its node's clock put its start before
	// every other one.
	createBackupAfter(t, ns, policy, backup{name: "skewed", source: "/pvc/data", claim: "data", location: "loc", phase: v1.RunCompleted,
		start: 50, end: 90, bytes: 2500, files: 25, uploaded: 250}, empty.CreationTimestamp.Time)
	testenv.Eventually(t, "the series after a backup whose node clock is behind", func() error {
		return check(t, []expect{
			{name: metrics.VolumeLastSuccessTimestamp, labels: data, value: float64(at(90).Unix())},
			{name: metrics.VolumeLastAttemptTimestamp, labels: data, value: float64(at(50).Unix())},
			{name: metrics.VolumeLastAttemptSuccess, labels: data, value: 1},
			{name: metrics.VolumeConsecutiveFailures, labels: data, value: 0},
			{name: metrics.VolumeLastBackupDuration, labels: data, value: 40},
			{name: metrics.VolumeLastBackupFiles, labels: data, value: 25},
		})
	})
}

// TestPolicyRepositoryLocationAndRestoreSeries: the series of policies, repositories,
// storage locations and failed restores come from their status and go with them.
func TestPolicyRepositoryLocationAndRestoreSeries(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := t.Context()
	ns := env.Namespace(t, nil)

	p := createPolicy(t, "nightly-"+ns, nil)
	p.Status = v1.VolumeBackupPolicyStatus{
		Conditions: []metav1.Condition{condition(v1.ConditionReady, metav1.ConditionFalse), condition(v1.ConditionStalled, metav1.ConditionTrue)},
		Skipped:    []v1.SkippedVolumes{{Reason: "HostPath", Count: 2}},
		LastRun: &v1.RunSummary{Name: "nightly-1", Outcome: v1.RunOutcomePartiallyFailed, StartTime: at(1000),
			VolumesSelected: 5, VolumesCompleted: 2, VolumesFailed: 3, VolumesSkipped: 2,
			Failures: []v1.RunFailures{{Reason: "BackupFailed", Count: 2}, {Reason: "CreateFailed", Count: 1}}},
	}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	pl := map[string]string{"policy": p.Name}
	with := func(k, v string) map[string]string { m := maps.Clone(pl); m[k] = v; return m }

	loc := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "store-" + ns},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/srv/backups"}}}
	if err := env.Client.Create(ctx, loc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), loc) })
	loc.Status.Conditions = []metav1.Condition{condition(v1.ConditionReady, metav1.ConditionTrue)}
	if err := env.Client.Status().Update(ctx, loc); err != nil {
		t.Fatal(err)
	}

	repo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: loc.Name + "-restic"},
		Spec: v1.BackupRepositorySpec{StorageLocation: loc.Name, Uploader: v1.UploaderRestic}}
	if err := env.Client.Create(ctx, repo); err != nil {
		t.Fatal(err)
	}
	repo.Status.Conditions = []metav1.Condition{condition(v1.ConditionReady, metav1.ConditionTrue)}
	repo.Status.LastMaintenanceTime = at(2000)
	repo.Status.StoreUsage = &v1.StoreUsage{Bytes: 123456789, Objects: 42, MeasuredTime: *at(2000)}
	// Newest first: a deferred pass does not hide the success before it.
	repo.Status.Maintenance = []v1.MaintenanceResult{
		{Mode: "Prune", Result: "Deferred", StartTime: *at(2500)},
		{Mode: "Prune", Result: "Succeeded", StartTime: *at(1900), CompletionTime: at(2000)},
		{Mode: "Prune", Result: "Failed", StartTime: *at(900), CompletionTime: at(1000)},
	}
	if err := env.Client.Status().Update(ctx, repo); err != nil {
		t.Fatal(err)
	}
	rl := map[string]string{"namespace": ns, "repository": repo.Name, "location": loc.Name, "uploader": "restic"}

	restores := map[v1.RestorePhase]*v1.VolumeRestore{}
	for _, phase := range []v1.RestorePhase{v1.RestoreFailed, v1.RestoreCompleted, v1.RestoreExpired} {
		vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: strings.ToLower(string(phase))},
			Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}}}
		if err := env.Client.Create(ctx, vr); err != nil {
			t.Fatal(err)
		}
		vr.Status.Phase = phase
		if err := env.Client.Status().Update(ctx, vr); err != nil {
			t.Fatal(err)
		}
		restores[phase] = vr
	}

	testenv.Eventually(t, "the policy, repository, location and restore series", func() error {
		return check(t, []expect{
			{name: metrics.PolicyReady, labels: pl, value: 0},
			{name: metrics.PolicyStalled, labels: pl, value: 1},
			{name: metrics.PolicyLastRunTimestamp, labels: pl, value: float64(at(1000).Unix())},
			{name: metrics.PolicyLastRunSuccess, labels: pl, value: 0},
			{name: metrics.PolicyLastRunVolumes, labels: with("state", "selected"), value: 5},
			{name: metrics.PolicyLastRunVolumes, labels: with("state", "completed"), value: 2},
			{name: metrics.PolicyLastRunVolumes, labels: with("state", "failed"), value: 3},
			{name: metrics.PolicyLastRunVolumes, labels: with("state", "skipped"), value: 2},
			{name: metrics.PolicyLastRunSkippedVolumes, labels: with("reason", "HostPath"), value: 2},
			{name: metrics.PolicyLastRunFailedVolumes, labels: with("reason", "BackupFailed"), value: 2},
			{name: metrics.PolicyLastRunFailedVolumes, labels: with("reason", "CreateFailed"), value: 1},

			{name: metrics.StorageLocationReady, labels: map[string]string{"location": loc.Name}, value: 1},

			{name: metrics.RepositoryReady, labels: rl, value: 1},
			{name: metrics.RepositoryStalled, labels: rl, value: 0},
			{name: metrics.RepositoryLastMaintenanceTimestamp, labels: rl, value: float64(at(2000).Unix())},
			{name: metrics.RepositoryLastMaintenanceSuccess, labels: rl, value: 1},
			{name: metrics.RepositorySize, labels: rl, value: 123456789},

			{name: metrics.RestoreFailed, labels: map[string]string{"namespace": ns, "restore": "failed"}, value: 1},
			{name: metrics.RestoreFailed, labels: map[string]string{"namespace": ns, "restore": "expired"}, value: 1},
			{name: metrics.RestoreFailed, labels: map[string]string{"namespace": ns, "restore": "completed"}, absent: true},
		})
	})

	// A run in progress has no outcome yet: no success series rather than a 0.
	p.Status.LastRun = &v1.RunSummary{Name: "nightly-2", Outcome: v1.RunOutcomeInProgress, StartTime: at(3000), VolumesSelected: 5}
	p.Status.Conditions = []metav1.Condition{condition(v1.ConditionReady, metav1.ConditionTrue)}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{restores[v1.RestoreFailed], repo, loc} {
		if err := env.Client.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "the series after the run started and the objects went", func() error {
		return check(t, []expect{
			{name: metrics.PolicyReady, labels: pl, value: 1},
			{name: metrics.PolicyLastRunTimestamp, labels: pl, value: float64(at(3000).Unix())},
			{name: metrics.PolicyLastRunSuccess, labels: pl, absent: true},
			{name: metrics.PolicyLastRunFailedVolumes, labels: pl, absent: true},
			{name: metrics.StorageLocationReady, labels: map[string]string{"location": loc.Name}, absent: true},
			{name: metrics.RepositoryReady, labels: rl, absent: true},
			{name: metrics.RestoreFailed, labels: map[string]string{"namespace": ns, "restore": "failed"}, absent: true},
			{name: metrics.RestoreFailed, labels: map[string]string{"namespace": ns, "restore": "expired"}, value: 1},
		})
	})
}

// TestAgentRunningOnEveryLinuxNode: 1 where a Running and Ready agent pod is on the
// node, 0 where none is or it is not Ready, no series for a node that is not Linux.
func TestAgentRunningOnEveryLinuxNode(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := t.Context()
	ns := env.Namespace(t, nil) // only for a unique prefix
	if err := env.EnsureNamespace(ctx, testenv.OperatorNamespace); err != nil {
		t.Fatal(err)
	}
	node := func(name, os string) string {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name, Labels: map[string]string{corev1.LabelOSStable: os}}}
		if os == "" {
			n.Labels = nil
		}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), n) })
		return n.Name
	}
	agentPod := func(node string, ready corev1.ConditionStatus) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, GenerateName: "holdfast-agent-",
				Labels: map[string]string{"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent", Image: "holdfast:test"}}},
		}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}
		if err := env.Client.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	served, unlabelled, notReady, empty, windows := node("a", "linux"), node("b", ""), node("c", "linux"), node("d", "linux"), node("e", "windows")
	agentPod(served, corev1.ConditionTrue)
	agentPod(unlabelled, corev1.ConditionTrue)
	agentPod(notReady, corev1.ConditionFalse)
	agentPod(windows, corev1.ConditionTrue)
	n := func(name string) map[string]string { return map[string]string{"node": name} }
	testenv.Eventually(t, "the agent series of the nodes", func() error {
		return check(t, []expect{
			{name: metrics.NodeAgentRunning, labels: n(served), value: 1},
			{name: metrics.NodeAgentRunning, labels: n(unlabelled), value: 1},
			{name: metrics.NodeAgentRunning, labels: n(notReady), value: 0},
			{name: metrics.NodeAgentRunning, labels: n(empty), value: 0},
			{name: metrics.NodeAgentRunning, labels: n(windows), absent: true},
		})
	})
}

// TestOnlyTheElectedManagerExports: a replica that waits for the leader lease exports
// no state, so that each series comes from one manager; once elected it does.
func TestOnlyTheElectedManagerExports(t *testing.T) {
	r := clusterOf(scale{volumes: 10, backupsPerVolume: 2, namespaces: 2, policies: 1, nodes: 1})
	store := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for i := range r.pvbs {
		if err := store.Add(&r.pvbs[i]); err != nil {
			t.Fatal(err)
		}
	}
	r.store = store
	c := New(r, Options{Namespace: "holdfast-system"})
	elected := make(chan struct{})
	c.elected = elected
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	count := func() int {
		n, err := testutil.GatherAndCount(reg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Errorf("a manager that is not the leader exports %d series", n)
	}
	close(elected)
	if n := count(); n < 10*9 {
		t.Errorf("the leader exports %d series, want at least the 90 of its 10 volumes", n)
	}
}
