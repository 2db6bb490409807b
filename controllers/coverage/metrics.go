package coverage

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The coverage metrics (docs/coverage.md, the metrics contract of issue 17). They are
// collected from the last computation on each scrape, so a series goes away with the
// state that made it: a claim that becomes protected leaves holdfast_unprotected_claim.
var (
	descVolumes = prometheus.NewDesc("holdfast_coverage_volumes",
		"Volumes (claims, and pod volumes that hold data, once per source) by namespace and coverage state: protected, skipped, excluded, unprotected.",
		[]string{"namespace", "state"}, nil)
	descUnprotectedClaim = prometheus.NewDesc("holdfast_unprotected_claim",
		"1 for each PersistentVolumeClaim that no VolumeBackupPolicy protects and no coverage exclusion matches.",
		[]string{"namespace", "claim"}, nil)
	descUnprotectedVolume = prometheus.NewDesc("holdfast_unprotected_volume",
		"1 for each pod volume that is not a claim (emptyDir, hostPath, ...) that no VolumeBackupPolicy protects and no coverage exclusion matches; source is the backup's source path.",
		[]string{"namespace", "source", "volume"}, nil)
	descNodeProtected = prometheus.NewDesc("holdfast_node_protected_volumes",
		"Volumes a policy run would back up on the node (the node's agent must run).",
		[]string{"node"}, nil)
)

var states = []string{v1.CoverageProtected, v1.CoverageSkipped, v1.CoverageExcluded, v1.CoverageUnprotected}

// collector exports the last computation. Until there is one (before the first
// computation, or on a manager that is not the leader) it exports nothing.
type collector struct {
	mu     sync.RWMutex
	result *Result
}

var (
	// metricsCollector is registered once on controller-runtime's registry, the one the
	// manager serves on /metrics; each Setup publishes into it.
	metricsCollector = &collector{}
	registerOnce     sync.Once
)

func (c *collector) set(r *Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.result = r
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descVolumes
	ch <- descUnprotectedClaim
	ch <- descUnprotectedVolume
	ch <- descNodeProtected
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.RLock()
	r := c.result
	c.mu.RUnlock()
	if r == nil {
		return
	}
	perNS := map[string]map[string]int{}
	for i := range r.Volumes {
		v := &r.Volumes[i]
		if perNS[v.Namespace] == nil {
			perNS[v.Namespace] = map[string]int{}
		}
		perNS[v.Namespace][v.State]++
		if v.State != v1.CoverageUnprotected {
			continue
		}
		if v.Claim != "" {
			ch <- prometheus.MustNewConstMetric(descUnprotectedClaim, prometheus.GaugeValue, 1, v.Namespace, v.Claim)
		} else {
			ch <- prometheus.MustNewConstMetric(descUnprotectedVolume, prometheus.GaugeValue, 1, v.Namespace, v.Source, v.Name)
		}
	}
	// Every state of every namespace with volumes, zeros included, so that a ratio or
	// an alert on unprotected > 0 has a series to read.
	for ns, counts := range perNS {
		for _, s := range states {
			ch <- prometheus.MustNewConstMetric(descVolumes, prometheus.GaugeValue, float64(counts[s]), ns, strings.ToLower(s))
		}
	}
	for node, n := range r.ProtectedOnNode {
		ch <- prometheus.MustNewConstMetric(descNodeProtected, prometheus.GaugeValue, float64(n), node)
	}
}

func registerMetrics() {
	registerOnce.Do(func() { metrics.Registry.MustRegister(metricsCollector) })
}
