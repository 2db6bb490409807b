// Package controlplane measures the policy controller at scale against a real API
// server (envtest: etcd and kube-apiserver from bin/tools): how long a policy change
// takes to show in status, how long a run takes to create its PodVolumeBackups, how
// many API requests a run costs, and the manager's CPU and memory.
package controlplane

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Options size the cluster.
type Options struct {
	Namespaces, PodsPerNamespace, Policies int
	Log                                    io.Writer
}

// Result is what one measurement found.
type Result struct {
	Namespaces, Pods, Policies int
	// Populate is how long the bench took to create the namespaces and pods (setup).
	Populate time.Duration
	// Initial is manager start until every policy's status is up to date.
	Initial time.Duration
	// ChangeOne is one policy's selector changed until its status is up to date;
	// ChangeAll is every policy's selector changed at once until all are.
	ChangeOne, ChangeAll time.Duration
	// Run is a run-now token on every policy until all their PodVolumeBackups exist.
	Run time.Duration
	// Backups and Repositories the run created.
	Backups, Repositories int
	// Requests the manager sent during the run, by kind, and in total.
	RunRequests      map[string]int64
	RunRequestsTotal int64
	// LaterRun, LaterRunCPU and LaterRunRequests are the same for a second run, whose
	// repositories exist from the first (every nightly run after the first).
	LaterRun, LaterRunCPU time.Duration
	LaterRunRequests      map[string]int64
	LaterRunRequestsTotal int64
	// CPU of this process (manager plus the bench's light polling) per phase.
	InitialCPU, ChangeAllCPU, RunCPU time.Duration
	// HeapAfterRun is the Go heap in use after both runs and a GC; PeakRSS the process's
	// peak resident set (includes the bench's own setup objects).
	HeapAfterRun uint64
	PeakRSS      int64
}

// counter counts the requests a rest.Config's clients send.
type counter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		kind := req.Method
		if req.URL.Query().Get("watch") == "true" {
			kind = "WATCH"
		}
		c.mu.Lock()
		c.n[kind]++
		c.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func peakRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s control plane: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// Run starts a control plane, fills it, runs the policy controller and measures it.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	res = Result{Namespaces: opts.Namespaces, Pods: opts.Namespaces * opts.PodsPerNamespace, Policies: opts.Policies}
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := env.Stop(); err == nil {
			err = stopErr
		}
	}()
	setupCfg := rest.CopyConfig(env.Config)
	setupCfg.QPS, setupCfg.Burst = -1, 0
	c, err := client.New(setupCfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return res, err
	}

	start := time.Now()
	if err := populate(ctx, c, opts); err != nil {
		return res, err
	}
	res.Populate = time.Since(start)
	opts.logf("%d namespaces and %d pods created in %s", opts.Namespaces, res.Pods, res.Populate.Round(time.Millisecond))
	if err := readyLocation(ctx, c); err != nil {
		return res, err
	}
	for i := 0; i < opts.Policies; i++ {
		if err := c.Create(ctx, newPolicy(i, opts.Policies)); err != nil {
			return res, err
		}
	}

	// The manager's rest.Config is what `holdfast manager` gets from ctrl.GetConfig:
	// no client-side rate limit (QPS -1), only the API server's fairness.
	count := &counter{n: map[string]int64{}}
	mgrCfg := rest.CopyConfig(env.Config)
	mgrCfg.QPS, mgrCfg.Burst = -1, 0
	mgrCfg.Wrap(count.wrap)
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return res, err
	}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return res, err
	}
	if err := (&policy.VolumeBackupPolicyReconciler{Client: mgr.GetClient(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return res, err
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	cpu0 := cpu()
	start = time.Now()
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		if mErr := <-done; err == nil {
			err = mErr
		}
	}()
	perPolicy := int32(res.Pods / opts.Policies)
	if err := waitPolicies(ctx, c, opts.Policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.ObservedGeneration == p.Generation && p.Status.SelectedVolumes == perPolicy
	}); err != nil {
		return res, fmt.Errorf("initial status: %w", err)
	}
	res.Initial, res.InitialCPU = time.Since(start), cpu()-cpu0
	opts.logf("every policy up to date %s after the manager started", res.Initial.Round(time.Millisecond))

	// One policy changes: it selects the next group of namespaces instead.
	start = time.Now()
	if err := reselect(ctx, c, 0, 1, opts.Policies); err != nil {
		return res, err
	}
	if err := waitPolicies(ctx, c, opts.Policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.ObservedGeneration == p.Generation && p.Status.SelectedVolumes == perPolicy
	}); err != nil {
		return res, fmt.Errorf("one change: %w", err)
	}
	res.ChangeOne = time.Since(start)
	opts.logf("one policy changed: up to date in %s", res.ChangeOne.Round(time.Millisecond))

	// Every policy changes at once.
	cpu0, start = cpu(), time.Now()
	for i := 0; i < opts.Policies; i++ {
		if err := reselect(ctx, c, i, 2, opts.Policies); err != nil {
			return res, err
		}
	}
	if err := waitPolicies(ctx, c, opts.Policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.ObservedGeneration == p.Generation && p.Status.SelectedVolumes == perPolicy
	}); err != nil {
		return res, fmt.Errorf("all changed: %w", err)
	}
	res.ChangeAll, res.ChangeAllCPU = time.Since(start), cpu()-cpu0
	opts.logf("every policy changed: all up to date in %s", res.ChangeAll.Round(time.Millisecond))

	// A first run creates every namespace's repository and all the backups; a later
	// run, the nightly case, finds the repositories there.
	first, err := measureRun(ctx, c, count, opts.Policies, "bench-1", res.Pods)
	if err != nil {
		return res, fmt.Errorf("first run: %w", err)
	}
	res.Run, res.RunCPU, res.RunRequests, res.RunRequestsTotal = first.took, first.cpu, first.requests, first.requestsTotal
	opts.logf("first run: %d PodVolumeBackups in %s, %d API requests", res.Pods, res.Run.Round(time.Millisecond), res.RunRequestsTotal)
	// The agents would finish the first run's backups; until they do, a policy skips
	// those volumes as in flight.
	if err := completeBackups(ctx, c, opts.Policies); err != nil {
		return res, err
	}
	later, err := measureRun(ctx, c, count, opts.Policies, "bench-2", 2*res.Pods)
	if err != nil {
		return res, fmt.Errorf("later run: %w", err)
	}
	res.LaterRun, res.LaterRunCPU, res.LaterRunRequests, res.LaterRunRequestsTotal = later.took, later.cpu, later.requests, later.requestsTotal
	opts.logf("later run: %d more PodVolumeBackups in %s, %d API requests", res.Pods, res.LaterRun.Round(time.Millisecond), res.LaterRunRequestsTotal)
	res.Backups = res.Pods
	var repos v1.BackupRepositoryList
	if err := c.List(ctx, &repos); err != nil {
		return res, err
	}
	res.Repositories = len(repos.Items)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapAfterRun, res.PeakRSS = ms.HeapInuse, peakRSS()
	opts.logf("%d repositories; Go heap %d MiB after both runs", res.Repositories, res.HeapAfterRun>>20)
	return res, nil
}

// runCost is what one run of every policy took: the time and this process's CPU until
// its backups existed, and the requests the manager sent until the policies settled.
type runCost struct {
	took, cpu     time.Duration
	requests      map[string]int64
	requestsTotal int64
}

// measureRun sets a run-now token on every policy and waits until total
// PodVolumeBackups exist and every policy has recorded the run.
func measureRun(ctx context.Context, c client.Client, count *counter, policies int, token string, total int) (runCost, error) {
	var rc runCost
	before := count.snapshot()
	cpu0, start := cpu(), time.Now()
	for i := 0; i < policies; i++ {
		p := &v1.VolumeBackupPolicy{}
		if err := c.Get(ctx, client.ObjectKey{Name: policyName(i)}, p); err != nil {
			return rc, err
		}
		patch := client.MergeFrom(p.DeepCopy())
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[v1.AnnotationRunNow] = token
		if err := c.Patch(ctx, p, patch); err != nil {
			return rc, err
		}
	}
	for {
		var pvbs metav1.PartialObjectMetadataList
		pvbs.SetGroupVersionKind(v1.GroupVersion.WithKind("PodVolumeBackupList"))
		if err := c.List(ctx, &pvbs); err != nil {
			return rc, err
		}
		if len(pvbs.Items) >= total {
			break
		}
		if time.Since(start) > 20*time.Minute {
			return rc, fmt.Errorf("%d of %d PodVolumeBackups exist after 20 minutes", len(pvbs.Items), total)
		}
		select {
		case <-ctx.Done():
			return rc, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	rc.took, rc.cpu = time.Since(start), cpu()-cpu0
	// Let the controller settle (its last status patches) before counting.
	if err := waitPolicies(ctx, c, policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.LastRun != nil && p.Status.LastRunNowToken == token
	}); err != nil {
		return rc, err
	}
	rc.requests = map[string]int64{}
	for k, v := range count.snapshot() {
		if d := v - before[k]; d > 0 {
			rc.requests[k] = d
			rc.requestsTotal += d
		}
	}
	return rc, nil
}

// completeBackups marks every PodVolumeBackup Completed, as the agents would, and
// waits until every policy has recorded its run as Succeeded.
func completeBackups(ctx context.Context, c client.Client, policies int) error {
	var pvbs v1.PodVolumeBackupList
	if err := c.List(ctx, &pvbs); err != nil {
		return err
	}
	for i := range pvbs.Items {
		b := &pvbs.Items[i]
		b.Status.Phase = v1.RunCompleted
		if err := c.Status().Update(ctx, b); err != nil {
			return fmt.Errorf("completing PodVolumeBackup %s/%s: %w", b.Namespace, b.Name, err)
		}
	}
	return waitPolicies(ctx, c, policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.LastRun != nil && p.Status.LastRun.Outcome == v1.RunOutcomeSucceeded
	})
}

func policyName(i int) string { return fmt.Sprintf("bench-%02d", i) }

// Namespace i carries the label group=g<i mod policies>; policy i selects group
// (i+shift) mod policies, so every change moves a policy to other namespaces.
func selector(i, shift, policies int) string {
	return fmt.Sprintf(`namespace.metadata.labels[?"group"].orValue("") == "g%02d"`, (i+shift)%policies)
}

func newPolicy(i, policies int) *v1.VolumeBackupPolicy {
	return &v1.VolumeBackupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName(i)},
		Spec: v1.VolumeBackupPolicySpec{
			Selector:        v1.VolumeSelector{Namespaces: selector(i, 0, policies), Volumes: `volume.name == "data"`},
			StorageLocation: "default",
		},
	}
}

func reselect(ctx context.Context, c client.Client, i, shift, policies int) error {
	p := &v1.VolumeBackupPolicy{}
	if err := c.Get(ctx, client.ObjectKey{Name: policyName(i)}, p); err != nil {
		return err
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Spec.Selector.Namespaces = selector(i, shift, policies)
	return c.Patch(ctx, p, patch)
}

func waitPolicies(ctx context.Context, c client.Client, n int, ok func(*v1.VolumeBackupPolicy) bool) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var list v1.VolumeBackupPolicyList
		if err := c.List(ctx, &list); err != nil {
			return err
		}
		good := 0
		var bad []string
		for i := range list.Items {
			if ok(&list.Items[i]) {
				good++
			} else {
				bad = append(bad, list.Items[i].Name)
			}
		}
		if good == n {
			return nil
		}
		if time.Now().After(deadline) {
			sort.Strings(bad)
			return fmt.Errorf("%d of %d policies not up to date after 10 minutes: %s", len(bad), n, strings.Join(bad, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readyLocation creates the storage location "default" that the policies name, Ready
// as the storage controller (not run here) would leave it: a policy runs only to a
// Ready location.
func readyLocation(ctx context.Context, c client.Client) error {
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/backups"}}}
	if err := c.Create(ctx, bsl); err != nil {
		return err
	}
	bsl.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Probed",
		Message: "probed", ObservedGeneration: bsl.Generation, LastTransitionTime: metav1.Now()}}
	return c.Status().Update(ctx, bsl)
}

// populate creates the namespaces and running pods (one emptyDir the policies select
// and one configMap volume they must skip), in parallel.
func populate(ctx context.Context, c client.Client, opts Options) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= opts.Namespaces || firstErr.Load() != nil {
					return
				}
				if err := populateNamespace(ctx, c, i, opts); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

func populateNamespace(ctx context.Context, c client.Client, i int, opts Options) error {
	ns := fmt.Sprintf("team-%04d", i)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"group": fmt.Sprintf("g%02d", i%opts.Policies)}}}); err != nil {
		return err
	}
	for j := 0; j < opts.PodsPerNamespace; j++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", j), Namespace: ns, Labels: map[string]string{"app": "bench"}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%02d", (i*opts.PodsPerNamespace+j)%50), ServiceAccountName: "default",
				Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				}},
		}
		if err := c.Create(ctx, pod); err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		if err := c.Status().Update(ctx, pod); err != nil {
			return err
		}
	}
	return nil
}

// Markdown renders the result as a table.
func Markdown(r Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#### Policy controller: %d pods in %d namespaces, %d policies\n\n", r.Pods, r.Namespaces, r.Policies)
	b.WriteString("| measurement | value |\n|---|---:|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("manager start → every policy's status up to date", r.Initial.Round(time.Millisecond).String())
	row("one policy's selector changed → its status up to date", r.ChangeOne.Round(time.Millisecond).String())
	row("all policies' selectors changed → all statuses up to date", r.ChangeAll.Round(time.Millisecond).String())
	row(fmt.Sprintf("run-now on every policy → all %d PodVolumeBackups exist", r.Backups), r.Run.Round(time.Millisecond).String())
	row("BackupRepositories the run created", fmt.Sprint(r.Repositories))
	row("manager API requests during the run", requests(r.RunRequestsTotal, r.RunRequests))
	row(fmt.Sprintf("later run (repositories exist) → %d more PodVolumeBackups exist", r.Backups), r.LaterRun.Round(time.Millisecond).String())
	row("manager API requests during the later run", requests(r.LaterRunRequestsTotal, r.LaterRunRequests))
	row("process CPU: start / all changed / run / later run", fmt.Sprintf("%s / %s / %s / %s", r.InitialCPU.Round(time.Millisecond),
		r.ChangeAllCPU.Round(time.Millisecond), r.RunCPU.Round(time.Millisecond), r.LaterRunCPU.Round(time.Millisecond)))
	row("Go heap in use after the runs (after GC)", fmt.Sprintf("%d MiB", r.HeapAfterRun>>20))
	row("process peak RSS (manager + bench client)", fmt.Sprintf("%d MiB", r.PeakRSS>>20))
	row("setup: creating namespaces and pods (bench client)", r.Populate.Round(time.Millisecond).String())
	b.WriteString("\n")
	return b.String()
}

func requests(total int64, byKind map[string]int64) string {
	var kinds []string
	for k, v := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d (%s)", total, strings.Join(kinds, ", "))
}
