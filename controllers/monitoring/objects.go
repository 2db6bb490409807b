package monitoring

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// collectPolicies sends the per-policy series, from each policy's status.
func (c *Collector) collectPolicies(ctx context.Context, ch chan<- prometheus.Metric) error {
	var list v1.VolumeBackupPolicyList
	if err := c.list(ctx, &list); err != nil {
		return err
	}
	d := &c.descs
	for i := range list.Items {
		p := &list.Items[i]
		name := p.Name
		gauge(ch, d.policyReady, metrics.Bool(conditions.IsReady(p.Status.Conditions)), name)
		gauge(ch, d.policyStalled, metrics.Bool(conditions.IsStalled(p.Status.Conditions)), name)
		for _, s := range p.Status.Skipped {
			gauge(ch, d.policySkipped, float64(s.Count), name, s.Reason)
		}
		run := p.Status.LastRun
		if run == nil {
			continue
		}
		if run.StartTime != nil {
			gauge(ch, d.policyLastRun, metrics.Seconds(run.StartTime.Time), name)
		}
		switch run.Outcome {
		case v1.RunOutcomeSucceeded, v1.RunOutcomePartiallyFailed, v1.RunOutcomeFailed:
			gauge(ch, d.policyLastRunSuccess, metrics.Bool(run.Outcome == v1.RunOutcomeSucceeded), name)
		}
		for state, n := range map[string]int32{"selected": run.VolumesSelected, "completed": run.VolumesCompleted,
			"failed": run.VolumesFailed, "skipped": run.VolumesSkipped} {
			gauge(ch, d.policyVolumes, float64(n), name, state)
		}
		for _, f := range run.Failures {
			gauge(ch, d.policyFailed, float64(f.Count), name, f.Reason)
		}
	}
	return nil
}

// collectRepositories sends the per-repository series.
func (c *Collector) collectRepositories(ctx context.Context, ch chan<- prometheus.Metric) error {
	var list v1.BackupRepositoryList
	if err := c.list(ctx, &list); err != nil {
		return err
	}
	d := &c.descs
	for i := range list.Items {
		r := &list.Items[i]
		l := []string{r.Namespace, r.Name, r.Spec.StorageLocation, string(r.Spec.Uploader)}
		gauge(ch, d.repositoryReady, metrics.Bool(conditions.IsReady(r.Status.Conditions)), l...)
		gauge(ch, d.repositoryStalled, metrics.Bool(conditions.IsStalled(r.Status.Conditions)), l...)
		if r.Status.LastMaintenanceTime != nil {
			gauge(ch, d.repositoryMaintenance, metrics.Seconds(r.Status.LastMaintenanceTime.Time), l...)
		}
		if u := r.Status.StoreUsage; u != nil {
			gauge(ch, d.repositorySize, float64(u.Bytes), l...)
		}
		// status.maintenance is newest first; a deferred pass (the repository was
		// locked by a backup) neither succeeded nor failed.
		for _, m := range r.Status.Maintenance {
			if m.Result == "Succeeded" || m.Result == "Failed" {
				gauge(ch, d.repositoryMaintenanceSuccess, metrics.Bool(m.Result == "Succeeded"), l...)
				break
			}
		}
	}
	return nil
}

// collectLocations sends whether each storage location is Ready.
func (c *Collector) collectLocations(ctx context.Context, ch chan<- prometheus.Metric) error {
	var list v1.BackupStorageLocationList
	if err := c.list(ctx, &list); err != nil {
		return err
	}
	for i := range list.Items {
		l := &list.Items[i]
		gauge(ch, c.descs.locationReady, metrics.Bool(conditions.IsReady(l.Status.Conditions)), l.Name)
	}
	return nil
}

// collectRestores sends one series per VolumeRestore that ended without restoring
// everything.
func (c *Collector) collectRestores(ctx context.Context, ch chan<- prometheus.Metric) error {
	var list v1.VolumeRestoreList
	if err := c.list(ctx, &list); err != nil {
		return err
	}
	for i := range list.Items {
		vr := &list.Items[i]
		switch vr.Status.Phase {
		case v1.RestoreFailed, v1.RestorePartiallyFailed, v1.RestoreExpired:
			gauge(ch, c.descs.restoreFailed, 1, vr.Namespace, vr.Name)
		}
	}
	return nil
}

// collectNodes sends, for every Linux node, whether a Running and Ready agent pod is
// on it. A node without the kubernetes.io/os label counts as Linux, as the stranded
// work guard has it.
func (c *Collector) collectNodes(ctx context.Context, ch chan<- prometheus.Metric) error {
	var nodes corev1.NodeList
	if err := c.list(ctx, &nodes); err != nil {
		return err
	}
	var pods corev1.PodList
	if err := c.list(ctx, &pods, client.InNamespace(c.opts.Namespace),
		client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(c.opts.AgentLabels)}); err != nil {
		return err
	}
	running := map[string]bool{}
	for i := range pods.Items {
		if p := &pods.Items[i]; agentServes(p) {
			running[p.Spec.NodeName] = true
		}
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if os := n.Labels[corev1.LabelOSStable]; os != "" && os != "linux" {
			continue
		}
		gauge(ch, c.descs.nodeAgentRunning, metrics.Bool(running[n.Name]), n.Name)
	}
	return nil
}

// agentServes says whether an agent pod runs and is Ready, and is not going away.
func agentServes(p *corev1.Pod) bool {
	if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning || !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
