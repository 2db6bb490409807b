package monitoring

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/stranded"
)

// The collector only reads, from the manager's cache.
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups;volumebackuppolicies;backuprepositories;backupstoragelocations;volumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes;pods,verbs=get;list;watch

// Options configure the collector.
type Options struct {
	// Namespace is the operator namespace, where the agent pods run.
	Namespace string
	// AgentLabels select the agent pods in Namespace (stranded.DefaultAgentLabels
	// when nil).
	AgentLabels map[string]string
	// Now is the clock the schedule intervals are computed from; time.Now when nil.
	Now func() time.Time
	// ScrapeTimeout bounds the cache reads of one scrape (10s when zero).
	ScrapeTimeout time.Duration
}

// Collector is a prometheus.Collector of the state in the API objects.
type Collector struct {
	reader client.Reader
	opts   Options
	// elected is closed once this manager leads (nil: always): the replicas that
	// wait export nothing, so that each series comes from one manager.
	elected <-chan struct{}
	descs   descs

	// backups, when set, reads the PodVolumeBackups straight from the informer's
	// store (see storeBackups); nil lists them from reader.
	backups *storeBackups

	mu        sync.Mutex
	intervals map[scheduleKey]interval
}

// storeBackups reads the PodVolumeBackups the informer holds without copying them:
// they are most of what a scrape reads (10,000 volumes with 25 backups each are
// 250,000), and even the shallow copy of a cache List costs more than the rest of
// the scrape (BenchmarkCollect).
type storeBackups struct {
	informer interface {
		HasSynced() bool
		GetStore() toolscache.Store
	}
}

// list returns the backups, or ok false until the informer has synced.
func (s *storeBackups) list() ([]*v1.PodVolumeBackup, bool) {
	if !s.informer.HasSynced() {
		return nil, false
	}
	objs := s.informer.GetStore().List()
	out := make([]*v1.PodVolumeBackup, 0, len(objs))
	for _, o := range objs {
		if b, ok := o.(*v1.PodVolumeBackup); ok {
			out = append(out, b)
		}
	}
	return out, true
}

// Setup makes the collector read mgr's cache, starts the informers it reads with the
// manager, and registers it with controller-runtime's registry, which the manager
// serves on its metrics endpoint.
func Setup(mgr ctrl.Manager, opts Options) (*Collector, error) {
	c := New(mgr.GetCache(), opts)
	c.elected = mgr.Elected()
	for _, obj := range watched() {
		inf, err := mgr.GetCache().GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("watching %T for the metrics: %w", obj, err)
		}
		if st, ok := inf.(interface {
			HasSynced() bool
			GetStore() toolscache.Store
		}); ok && isBackup(obj) {
			c.backups = &storeBackups{informer: st}
		}
	}
	if err := ctrlmetrics.Registry.Register(c); err != nil {
		return nil, fmt.Errorf("registering the state metrics: %w", err)
	}
	return c, nil
}

// watched are the kinds the collector reads.
func watched() []client.Object {
	return []client.Object{&v1.PodVolumeBackup{}, &v1.VolumeBackupPolicy{}, &v1.BackupRepository{},
		&v1.BackupStorageLocation{}, &v1.VolumeRestore{}, &corev1.Node{}, &corev1.Pod{}}
}

func isBackup(obj client.Object) bool {
	_, ok := obj.(*v1.PodVolumeBackup)
	return ok
}

// New returns a collector that reads r (a cache: every scrape lists every watched kind).
func New(r client.Reader, opts Options) *Collector {
	if opts.AgentLabels == nil {
		opts.AgentLabels = stranded.DefaultAgentLabels
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 10 * time.Second
	}
	return &Collector{reader: r, opts: opts, descs: newDescs(), intervals: map[scheduleKey]interval{}}
}

// Describe sends the descriptor of every metric the collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs.all() {
		ch <- d
	}
}

// Collect reads the cache and sends the metrics. A kind that cannot be read fails the
// scrape (an invalid metric): a partial view would hide the volumes it leaves out.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.elected != nil {
		select {
		case <-c.elected:
		default:
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ScrapeTimeout)
	defer cancel()
	for _, step := range []struct {
		desc    *prometheus.Desc
		collect func(context.Context, chan<- prometheus.Metric) error
	}{
		{c.descs.volumeLastSuccess, c.collectVolumes},
		{c.descs.policyReady, c.collectPolicies},
		{c.descs.repositoryReady, c.collectRepositories},
		{c.descs.locationReady, c.collectLocations},
		{c.descs.restoreFailed, c.collectRestores},
		{c.descs.nodeAgentRunning, c.collectNodes},
	} {
		if err := step.collect(ctx, ch); err != nil {
			ctrl.Log.WithName("metrics").Error(err, "reading the cache for the metrics")
			ch <- prometheus.NewInvalidMetric(step.desc, err)
		}
	}
}

// list reads a kind from the cache without copying each object: the collector only
// reads them, and a copy of every PodVolumeBackup on every scrape is what would cost.
func (c *Collector) list(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.reader.List(ctx, list, append(opts, client.UnsafeDisableDeepCopy)...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}
