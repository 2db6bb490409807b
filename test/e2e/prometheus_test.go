package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/prometheus"
)

// The Prometheus story's objects (manifests/reports.yaml).
const (
	reportsNamespace = "reports"
	reportsPolicy    = "reports-manager-only"
	reportsLocation  = "manager-only"
	reportsClaim     = "archive"
	reportsSource    = "/pod/reporter/spool"
	reportsRestore   = "spool-back"
)

// reportsRestoreManifest restores the spool of the running reporter pod from its latest
// backup, of which there is none: every backup of it failed.
const reportsRestoreManifest = `apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeRestore
metadata:
  name: spool-back
  namespace: reports
spec:
  podSelector:
    matchLabels:
      app: reporter
  runningPods: Overwrite
  volumes:
  - name: spool
`

// A real Prometheus (bin/tools/prometheus, on the host's loopback) scrapes the manager
// and the agent as docs/alerts.md configures one without the Prometheus Operator, with
// the token of the shipped scrape identity, and evaluates the shipped rules every 2 s.
// After a run of the stories' policy every volume with a completed backup has its
// last-success series, the run's at the time the backups completed; a claim that no
// policy selects is unprotected and its alert pending (its `for` is an hour: pending
// shows the rule matched real series); the failed first backup of a new volume makes
// HoldfastVolumeNeverBackedUp pending, and a restore of that volume, which has nothing
// to restore from, makes HoldfastRestoreFailed fire.
func (s *stories) prometheusSeesEveryVolumeAndAlerts(t *testing.T) {
	ctx := t.Context()
	e := s.e
	objs, err := e.componentObjects()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := prometheus.RuleFile(objs)
	if err != nil {
		t.Fatal(err)
	}
	token, err := e.ApplyScraperIdentity(ctx, objs)
	t.Cleanup(func() {
		if err := e.DeleteScraperIdentity(context.Background()); err != nil {
			t.Errorf("removing the scrape identity: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	prom, err := e.StartPrometheus(ctx, t.TempDir(), token, rules)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Stop()
		if t.Failed() {
			t.Logf("Prometheus's log:\n%s", prom.Log())
		}
	})

	e.Log("deploying the namespace %s: a claim no policy selects, and an emptyDir backed up to a location only the manager has", reportsNamespace)
	pv := filepath.Join(e.Cluster.StateDir, "local-volumes", "reports-archive")
	if err := os.MkdirAll(pv, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := e.Manifest("reports.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.removeReports(t) })
	if _, err := e.Kubectl(ctx, strings.ReplaceAll(m, "REPORTS_PV_PATH", pv), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	if s.first == nil { // the story runs alone
		if err := e.DeployApp(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.ApplyPolicy(ctx, "default"); err != nil {
			t.Fatal(err)
		}
	}
	run, err := e.RunPolicy(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}

	// Both targets are scraped with the token: a refused token is up == 0.
	if _, err := prom.WaitQuery(ctx, `up`, time.Minute, func(v model.Vector) (bool, string) {
		up := map[string]bool{}
		for _, smp := range v {
			up[string(smp.Metric["job"])] = smp.Value == 1
		}
		return up["holdfast-manager"] && up["holdfast-agent"], fmt.Sprintf("targets %v", v)
	}); err != nil {
		t.Fatalf("%v\ntargets:\n%s", err, prom.Targets(ctx))
	}

	s.everyVolumeHasItsLastSuccess(t, prom, run)
	s.unprotectedClaimAlertPending(t, prom)
	s.failedFirstBackupAlerts(t, prom)
	s.repositorySizeAfterMaintenance(t, prom, run)

	// What the lead quotes: one volume's series as the manager serves them, and the
	// size of what Prometheus holds.
	scrape, err := e.ScrapeManager(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	db := run.Backup(dbVolume)
	t.Logf("the manager's /metrics after the run, the series of the volume %s %s and of the story's failing volume and unprotected claim:\n%s",
		AppNamespace, db.Spec.SourcePath, grepMetrics(scrape,
			[]string{"holdfast_volume_", `namespace="` + AppNamespace + `"`, `source="` + db.Spec.SourcePath + `"`, `policy="` + PolicyName + `"`},
			[]string{"holdfast_volume_", `namespace="` + reportsNamespace + `"`},
			[]string{"holdfast_unprotected_claim", `namespace="` + reportsNamespace + `"`}))
	var counts []string
	for _, q := range []string{
		`count({__name__=~".+"})`,
		`count({__name__=~"holdfast_.+"})`,
		`count by (job) ({__name__=~".+"})`,
		`count by (job) ({__name__=~"holdfast_.+"})`,
		`count(holdfast_volume_last_attempt_timestamp_seconds)`,
		`sum(holdfast_coverage_volumes)`,
	} {
		v, err := prom.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, fmt.Sprintf("%s = %s", q, strings.ReplaceAll(v.String(), "\n", "; ")))
	}
	t.Logf("series Prometheus holds from the cluster's manager and agent (%d backed-up volumes in this run):\n%s", len(run.Backups), strings.Join(counts, "\n"))
}

// everyVolumeHasItsLastSuccess: Prometheus has a last-success series for every volume
// (namespace, source, policy) with a Completed PodVolumeBackup in the cluster, and no
// other; the run's volumes have the time their backups completed, minutes ago at most.
func (s *stories) everyVolumeHasItsLastSuccess(t *testing.T, prom *Prometheus, run *Run) {
	t.Helper()
	ctx := t.Context()
	type volume struct{ namespace, source, policy string }
	completed := map[volume]bool{}
	list := &backupv1alpha1.PodVolumeBackupList{}
	if err := s.e.Client.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if b := &list.Items[i]; b.Status.Phase == backupv1alpha1.RunCompleted {
			completed[volume{b.Namespace, b.Spec.SourcePath, identity.PolicyOfBackup(b)}] = true
		}
	}
	key := func(m model.Metric) volume {
		return volume{string(m["namespace"]), string(m["source"]), string(m["policy"])}
	}
	vec, err := prom.WaitQuery(ctx, "holdfast_volume_last_success_timestamp_seconds", time.Minute, func(v model.Vector) (bool, string) {
		got := map[volume]bool{}
		for _, smp := range v {
			got[key(smp.Metric)] = true
		}
		var missing, extra []volume
		for k := range completed {
			if !got[k] {
				missing = append(missing, k)
			}
		}
		for k := range got {
			if !completed[k] {
				extra = append(extra, k)
			}
		}
		for _, b := range run.Backups {
			for _, smp := range v {
				if key(smp.Metric) == (volume{b.Namespace, b.Spec.SourcePath, PolicyName}) && float64(smp.Value) < float64(b.Status.CompletionTime.Unix()) {
					return false, fmt.Sprintf("%s still has an earlier backup's time %v", b.Spec.SourcePath, smp.Value)
				}
			}
		}
		return len(missing) == 0 && len(extra) == 0, fmt.Sprintf("volumes with a completed backup but no series: %v; series of no such volume: %v", missing, extra)
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, b := range run.Backups {
		i := slices.IndexFunc(vec, func(smp *model.Sample) bool {
			return key(smp.Metric) == volume{b.Namespace, b.Spec.SourcePath, PolicyName}
		})
		if i < 0 {
			t.Fatalf("no last-success series of %s %s", b.Namespace, b.Spec.SourcePath)
		}
		got := time.Unix(0, int64(float64(vec[i].Value)*1e9))
		if d := got.Sub(b.Status.CompletionTime.Time); math.Abs(d.Seconds()) >= 1 || now.Sub(got) > 5*time.Minute {
			t.Errorf("%s: last success at %s; the run's backup completed at %s, now is %s", vec[i].Metric, got, b.Status.CompletionTime, now)
		}
	}
	t.Logf("Prometheus holds the last success of all %d volumes with a completed backup; this run's %d at their completion time", len(completed), len(run.Backups))
}

// repositorySizeAfterMaintenance: a maintenance pass asked for after the run measures
// the size of the run's repository in the store, and Prometheus reads the same figure.
func (s *stories) repositorySizeAfterMaintenance(t *testing.T, prom *Prometheus, run *Run) {
	t.Helper()
	ctx := t.Context()
	b := run.Backup(dbVolume)
	key := client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Repository}
	brepo := &backupv1alpha1.BackupRepository{}
	if err := s.e.Client.Get(ctx, key, brepo); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	patch := client.MergeFrom(brepo.DeepCopy())
	if brepo.Annotations == nil {
		brepo.Annotations = map[string]string{}
	}
	brepo.Annotations[storage.AnnotationMaintenanceRequested] = asked.UTC().Format(time.RFC3339Nano)
	if err := s.e.Client.Patch(ctx, brepo, patch); err != nil {
		t.Fatal(err)
	}
	var usage backupv1alpha1.StoreUsage
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := s.e.Client.Get(ctx, key, brepo); err != nil {
			return false, err
		}
		u := brepo.Status.StoreUsage
		if u == nil || u.MeasuredTime.Time.Before(asked.Truncate(time.Second)) {
			return false, nil
		}
		usage = *u
		return true, nil
	}); err != nil {
		t.Fatalf("no size measured by a maintenance pass of %s since %s: %v; status.maintenance %+v", key, asked, err, brepo.Status.Maintenance)
	}
	if usage.Bytes <= 0 || usage.Objects <= 0 {
		t.Fatalf("%s: status.storeUsage %+v", key, usage)
	}
	q := fmt.Sprintf(`holdfast_repository_size_bytes{namespace=%q,repository=%q}`, key.Namespace, key.Name)
	if _, err := prom.WaitQuery(ctx, q, time.Minute, func(v model.Vector) (bool, string) {
		return len(v) == 1 && int64(v[0].Value) == usage.Bytes, fmt.Sprintf("%v, status says %d bytes", v, usage.Bytes)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s holds %d bytes in %d objects, measured at %s; Prometheus reads the same", key, usage.Bytes, usage.Objects, usage.MeasuredTime)
}

// unprotectedClaimAlertPending: the story's claim that no policy selects is an
// unprotected_claim series and HoldfastClaimUnprotected is pending for it; a claim a
// policy backs up is not.
func (s *stories) unprotectedClaimAlertPending(t *testing.T, prom *Prometheus) {
	t.Helper()
	ctx := t.Context()
	q := fmt.Sprintf(`holdfast_unprotected_claim{namespace=%q,claim=%q}`, reportsNamespace, reportsClaim)
	// Coverage is computed at most every 30 s after pods and claims change.
	if _, err := prom.WaitQuery(ctx, q, 2*time.Minute, func(v model.Vector) (bool, string) {
		return len(v) == 1 && v[0].Value == 1, v.String()
	}); err != nil {
		t.Fatal(err)
	}
	if v, err := prom.Query(ctx, fmt.Sprintf(`holdfast_unprotected_claim{namespace=%q}`, AppNamespace)); err != nil || len(v) != 0 {
		t.Errorf("claims of %s, which the stories' policy backs up, reported unprotected: %v %v", AppNamespace, v, err)
	}
	// for: 1h, so pending is as far as it goes in a test; pending means the rule's
	// expression matched the series Prometheus scraped from the manager.
	a, err := prom.WaitAlert(ctx, "HoldfastClaimUnprotected", model.LabelSet{"namespace": reportsNamespace, "claim": reportsClaim}, promv1.AlertStatePending, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alert %s %s since %s: %s", a.Labels[model.AlertNameLabel], a.State, a.ActiveAt.Format(time.RFC3339), a.Annotations["summary"])
}

// failedFirstBackupAlerts: a run of the story's policy to a location the agent does not
// have fails the first backup of the spool volume; HoldfastVolumeNeverBackedUp goes
// pending for it, and a restore of it, which has no backup to restore from, fails and
// HoldfastRestoreFailed fires.
func (s *stories) failedFirstBackupAlerts(t *testing.T, prom *Prometheus) {
	t.Helper()
	ctx := t.Context()
	e := s.e
	if _, err := e.Kubectl(ctx, "", "-n", reportsNamespace, "wait", "--for=condition=Ready", "pod/reporter", "--timeout=2m"); err != nil {
		t.Fatal(e.withPodState(ctx, reportsNamespace, err))
	}
	if err := e.WaitLocationReady(ctx, reportsLocation); err != nil {
		t.Fatal(err)
	}
	previous, err := e.StartRun(ctx, reportsPolicy, "prometheus-1")
	if err != nil {
		t.Fatal(err)
	}
	run, err := e.WaitRunEnded(ctx, reportsPolicy, "prometheus-1", previous)
	if err != nil {
		t.Fatal(err)
	}
	const noRepository = "No kopia repository exists at"
	if len(run.Backups) != 1 || run.Backups[0].Status.Phase != backupv1alpha1.RunFailed || !strings.Contains(run.Backups[0].Status.Message, noRepository) {
		t.Fatalf("the run to a location the agent does not have: want one backup Failed with %q, got %+v", noRepository, run.Backups)
	}
	volume := model.LabelSet{"namespace": reportsNamespace, "source": reportsSource, "claim": "", "policy": reportsPolicy, "location": reportsLocation}
	if _, err := prom.WaitQuery(ctx, fmt.Sprintf(`holdfast_volume_last_attempt_success{namespace=%q,source=%q}`, reportsNamespace, reportsSource), time.Minute, func(v model.Vector) (bool, string) {
		return len(v) == 1 && v[0].Value == 0 && hasLabels(model.LabelSet(v[0].Metric), volume), v.String()
	}); err != nil {
		t.Fatal(err)
	}
	// for: 1h after the first failed attempt, in which a run-now can put it right.
	a, err := prom.WaitAlert(ctx, "HoldfastVolumeNeverBackedUp", volume, promv1.AlertStatePending, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alert %s %s since %s: %s", a.Labels[model.AlertNameLabel], a.State, a.ActiveAt.Format(time.RFC3339), a.Annotations["summary"])

	e.Log("restoring the volume that was never backed up: VolumeRestore %s/%s", reportsNamespace, reportsRestore)
	if _, err := e.Kubectl(ctx, reportsRestoreManifest, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	vr := &backupv1alpha1.VolumeRestore{}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: reportsNamespace, Name: reportsRestore}, vr)
		return err == nil && vr.Status.Phase.IsFinal(), nil
	}); err != nil || vr.Status.Phase != backupv1alpha1.RestoreFailed {
		t.Fatalf("VolumeRestore %s: %v, phase %s, want Failed: %+v", reportsRestore, err, vr.Status.Phase, vr.Status)
	}
	// No for: a person is waiting for a restore.
	a, err = prom.WaitAlert(ctx, "HoldfastRestoreFailed", model.LabelSet{"namespace": reportsNamespace, "restore": reportsRestore}, promv1.AlertStateFiring, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alert %s %s since %s: %s", a.Labels[model.AlertNameLabel], a.State, a.ActiveAt.Format(time.RFC3339), a.Annotations["summary"])
}

// removeReports deletes what the story deployed, so that the later stories see the
// cluster the earlier ones left.
func (s *stories) removeReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.e.DeleteNamespace(ctx, reportsNamespace); err != nil {
		t.Errorf("removing the story's namespace: %v", err)
		return
	}
	if _, err := s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "--timeout=2m", "vbp/"+reportsPolicy, "bsl/"+reportsLocation, "pv/reports-archive"); err != nil {
		t.Errorf("removing the story's policy, location and volume: %v", err)
	}
}

// grepMetrics returns the sample lines of an exposition that contain every string of
// one of the filters.
func grepMetrics(exposition string, filters ...[]string) string {
	var out []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, f := range filters {
			if all(l, f) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func all(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
