package agent

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/metrics"
	"github.com/holdfast-dev/holdfast/internal/version"
)

// agentMetrics are the agent's own metrics (docs/monitoring.md). Every series carries
// the agent's node as a constant label, so that Prometheus sees which node it is about
// whatever the scrape's target labels are. A nil *agentMetrics counts nothing (tests
// that drive a reconciler without an agent).
type agentMetrics struct {
	jobsTotal  *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	peakMemory *prometheus.HistogramVec
}

// registerMetrics creates the agent's metrics for its node and registers them with
// controller-runtime's registry, which the agent serves on its metrics endpoint. The
// running and queued jobs are read from the registries on each scrape.
func registerMetrics(node string, backups, restores *jobs) (*agentMetrics, error) {
	m, collectors := newMetrics(backups, restores)
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"node": node}, ctrlmetrics.Registry)
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the agent's metrics: %w", err)
		}
	}
	return m, nil
}

// DescribeMetrics sends the descriptors of the agent's own metrics, without the node
// label its registerer adds to every series (for checks of what the shipped dashboard
// reads; nothing is started or registered).
func DescribeMetrics(ch chan<- *prometheus.Desc) {
	_, collectors := newMetrics(nil, nil)
	for _, c := range collectors {
		c.Describe(ch)
	}
}

// newMetrics creates the agent's metrics and returns them with every collector to
// register: theirs, the info gauge and the jobs of the two registries.
func newMetrics(backups, restores *jobs) (*agentMetrics, []prometheus.Collector) {
	m := &agentMetrics{
		jobsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metrics.AgentJobsTotal,
			Help: "Backups and restores this agent ended, by kind and outcome (the final phase it recorded: Completed, Failed, Canceled).",
		}, []string{"kind", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metrics.AgentJobDuration,
			Help: "How long the data mover of a backup or restore ran, from its start to its exit, by kind and uploader.",
			// A volume of a few files takes seconds, a large one hours.
			Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800},
		}, []string{"kind", "uploader"}),
		peakMemory: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metrics.AgentMoverPeakMemory,
			Help: "Peak resident memory of the data mover process of each backup or restore (its rusage maxrss), by kind and uploader.",
			// 16 MiB to 8 GiB, doubling: what to set the agent's memory limit from.
			Buckets: prometheus.ExponentialBuckets(16<<20, 2, 10),
		}, []string{"kind", "uploader"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        metrics.AgentInfo,
		Help:        "1, with the version of the agent.",
		ConstLabels: prometheus.Labels{"version": version.String()},
	})
	info.Set(1)
	return m, []prometheus.Collector{m.jobsTotal, m.duration, m.peakMemory, info, &jobsCollector{backups: backups, restores: restores}}
}

// ended counts a job whose final phase was recorded.
func (m *agentMetrics) ended(kind mover.Kind, phase v1.RunPhase) {
	if m == nil {
		return
	}
	m.jobsTotal.WithLabelValues(string(kind), string(phase)).Inc()
}

// moverExited observes a data mover that ran for took and exited as ps says (nil when
// it never started).
func (m *agentMetrics) moverExited(job mover.Job, took time.Duration, ps *os.ProcessState) {
	if m == nil || ps == nil {
		return
	}
	kind, uploader := string(job.Kind), string(job.Uploader)
	m.duration.WithLabelValues(kind, uploader).Observe(took.Seconds())
	if peak, ok := mover.PeakMemoryBytes(ps); ok {
		m.peakMemory.WithLabelValues(kind, uploader).Observe(float64(peak))
	}
}

// jobsCollector reports, on each scrape, the jobs that hold one of the node's slots
// (running) and those waiting for one (queued), by kind.
type jobsCollector struct {
	backups, restores *jobs
}

var jobsDesc = prometheus.NewDesc(metrics.AgentJobs,
	"Backups and restores on this node that hold one of its --concurrency slots (running) or wait for one (queued).",
	[]string{"kind", "state"}, nil)

func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- jobsDesc }

func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range []struct {
		kind mover.Kind
		jobs *jobs
	}{{mover.KindBackup, c.backups}, {mover.KindRestore, c.restores}} {
		running, queued := k.jobs.counts()
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(running), string(k.kind), "running")
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(queued), string(k.kind), "queued")
	}
}
