// Package controlplane measures the policy controller at scale against a real API
// server (envtest: etcd and kube-apiserver from bin/tools): how long a policy change
// takes to show in status, how long a run takes to create its PodVolumeBackups, how
// many API requests a run costs, and the manager's CPU and memory.
package controlplane

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Options size the cluster.
type Options struct {
	Namespaces, PodsPerNamespace, Policies int
	Log                                    io.Writer
	// BareWorkers is how many creates the parallel bare-client baseline sends at
	// once (0: 16); the sequential one sends one at a time, as one policy pass does.
	BareWorkers int
	// ProfileDir, when set, receives a CPU profile of the manager and of the API server
	// for each run and a heap profile of the manager after each run.
	ProfileDir string
	// PollList makes the bench notice the end of a run as it did until 2026-12: by
	// listing every PodVolumeBackup (metadata) every 250 ms, which costs the API server
	// a list of 10,000-20,000 objects four times a second during the run. Without it
	// the bench asks the manager process how many PodVolumeBackups it has created.
	PollList bool
	// ManagerWorkers, when above 0, lets the manager reconcile that many policies at
	// once (controller-runtime's MaxConcurrentReconciles; `holdfast manager` uses 1):
	// an experiment on what concurrency would gain.
	ManagerWorkers int
}

// Result is what one measurement found.
type Result struct {
	Namespaces, Pods, Policies int
	// Populate is how long the bench took to create the namespaces and pods (setup).
	Populate time.Duration
	// Bare is the bare-client baseline before the manager started, one create at a time
	// and BareWorkers at a time; BareAfter the same after both runs, with their 20,000
	// PodVolumeBackups in etcd.
	Bare, BareAfter []BareCreate
	// Initial is manager start until every policy's status is up to date.
	Initial time.Duration
	// ChangeOne is one policy's selector changed until its status is up to date;
	// ChangeAll is every policy's selector changed at once until all are.
	ChangeOne, ChangeAll time.Duration
	// InitialCPU and ChangeAllCPU are the manager process's CPU in those phases.
	InitialCPU, ChangeAllCPU time.Duration
	// First is a run-now token on every policy until all their PodVolumeBackups exist;
	// it also creates every namespace's BackupRepository. Later is a second run, whose
	// repositories exist and whose volumes have the first run's completed backups
	// (every nightly run after the first).
	First, Later RunCost
	// Backups each run created, and the Repositories the first created.
	Backups, Repositories int
	// Manager memory, of the manager process alone: PeakRSS its peak resident set
	// (VmHWM), PeakHeap the most heap in objects a 100 ms sampler saw, HeapAfterRuns
	// the heap in use after both runs and a GC.
	PeakRSS                 int64
	PeakHeap, HeapAfterRuns uint64
	// BenchPeakRSS is the bench process's (the setup client, the baseline, the pollers).
	BenchPeakRSS int64
	// ManagerGoEnv is the Go runtime environment the manager process ran with: the
	// manager Deployment's (GOGC, GOMEMLIMIT).
	ManagerGoEnv []string
}

// RunCost is what one run of every policy cost.
type RunCost struct {
	// Took is from the run-now tokens until every PodVolumeBackup of the run exists.
	Took time.Duration
	// CPU of the manager, the API server and etcd in that time.
	ManagerCPU, APIServerCPU, EtcdCPU time.Duration
	// Requests the manager sent from the tokens until every policy recorded the run,
	// by verb and resource, and in total.
	Requests      map[string]int64
	RequestsTotal int64
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

func (o Options) profile(name string) string {
	if o.ProfileDir == "" {
		return ""
	}
	return filepath.Join(o.ProfileDir, name)
}

// Run starts a control plane, fills it, measures a bare client's create rate, runs
// the policy controller in a manager process and measures it.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	if opts.BareWorkers == 0 {
		opts.BareWorkers = 16
	}
	res = Result{Namespaces: opts.Namespaces, Pods: opts.Namespaces * opts.PodsPerNamespace, Policies: opts.Policies}
	if opts.ProfileDir != "" {
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return res, err
		}
	}
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

	// What the API server allows: a plain client creates one PodVolumeBackup per pod,
	// shaped as a run's, one at a time (as one policy pass creates them) and many at
	// a time. They are deleted before the manager starts, which never sees them.
	if res.Bare, err = bareBaseline(ctx, env.Config, c, opts, "20261207000000nba0001"); err != nil {
		return res, err
	}
	if err := deleteBare(ctx, c, opts); err != nil {
		return res, fmt.Errorf("deleting the baseline's PodVolumeBackups: %w", err)
	}

	if res.ManagerGoEnv, err = deploymentGoEnv(); err != nil {
		return res, err
	}
	mgr, err := startManager(env.Kubeconfig, opts.ManagerWorkers, res.ManagerGoEnv, opts.Log)
	if err != nil {
		return res, err
	}
	defer func() {
		if mErr := mgr.stop(); err == nil && mErr != nil {
			err = fmt.Errorf("manager process: %w", mErr)
		}
	}()
	start = time.Now()
	perPolicy := int32(res.Pods / opts.Policies)
	if err := waitPolicies(ctx, c, opts.Policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.ObservedGeneration == p.Generation && p.Status.SelectedVolumes == perPolicy
	}); err != nil {
		return res, fmt.Errorf("initial status: %w", err)
	}
	st, err := mgr.call("state")
	if err != nil {
		return res, err
	}
	res.Initial, res.InitialCPU = time.Since(start), st.CPU
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
	if st, err = mgr.call("state"); err != nil {
		return res, err
	}
	cpu0, start := st.CPU, time.Now()
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
	if st, err = mgr.call("state"); err != nil {
		return res, err
	}
	res.ChangeAll, res.ChangeAllCPU = time.Since(start), st.CPU-cpu0
	opts.logf("every policy changed: all up to date in %s", res.ChangeAll.Round(time.Millisecond))

	// A first run creates every namespace's repository and all the backups; a later
	// run, the nightly case, finds the repositories there.
	if res.First, err = measureRun(ctx, env.Config, c, mgr, opts, "bench-1", res.Pods, 1); err != nil {
		return res, fmt.Errorf("first run: %w", err)
	}
	opts.logf("first run: %d PodVolumeBackups in %s, %d API requests", res.Pods, res.First.Took.Round(time.Millisecond), res.First.RequestsTotal)
	// The agents would finish the first run's backups; until they do, a policy skips
	// those volumes as in flight.
	if err := completeBackups(ctx, c, opts.Policies); err != nil {
		return res, err
	}
	if res.Later, err = measureRun(ctx, env.Config, c, mgr, opts, "bench-2", 2*res.Pods, 2); err != nil {
		return res, fmt.Errorf("later run: %w", err)
	}
	opts.logf("later run: %d more PodVolumeBackups in %s, %d API requests", res.Pods, res.Later.Took.Round(time.Millisecond), res.Later.RequestsTotal)
	res.Backups = res.Pods
	var repos v1.BackupRepositoryList
	if err := c.List(ctx, &repos); err != nil {
		return res, err
	}
	res.Repositories = len(repos.Items)
	if st, err = mgr.call("gc"); err != nil {
		return res, err
	}
	res.PeakRSS, res.PeakHeap, res.HeapAfterRuns = st.PeakRSS, st.PeakHeap, st.HeapAfterGC
	opts.logf("%d repositories; manager peak RSS %d MiB, heap %d MiB after both runs", res.Repositories, res.PeakRSS>>20, res.HeapAfterRuns>>20)

	// The baseline again, with the runs' 20,000 PodVolumeBackups in etcd and the
	// manager idle.
	if res.BareAfter, err = bareBaseline(ctx, env.Config, c, opts, "20261207000000nba0002"); err != nil {
		return res, err
	}
	res.BenchPeakRSS = peakRSS()
	return res, nil
}

// bareBaseline creates the baseline's objects twice (one at a time, then
// opts.BareWorkers at a time), with names of its own each time.
func bareBaseline(ctx context.Context, cfg *rest.Config, c client.Client, opts Options, suffix string) ([]BareCreate, error) {
	var out []BareCreate
	for i, workers := range []int{1, opts.BareWorkers} {
		b, err := createBare(ctx, cfg, c, opts, workers, fmt.Sprintf("%s%d", suffix, i))
		if err != nil {
			return nil, fmt.Errorf("bare-client baseline: %w", err)
		}
		opts.logf("bare client, %d at a time: %d PodVolumeBackups in %s (%.0f/s)", workers, b.Objects, b.Took.Round(time.Millisecond), b.PerSecond())
		out = append(out, b)
	}
	return out, nil
}

// measureRun sets a run-now token on every policy and waits until total
// PodVolumeBackups exist, then until every policy has recorded the run.
func measureRun(ctx context.Context, cfg *rest.Config, c client.Client, mgr *managerProcess, opts Options, token string, total, n int) (RunCost, error) {
	var rc RunCost
	before, err := mgr.call("state")
	if err != nil {
		return rc, err
	}
	if f := opts.profile(fmt.Sprintf("manager-run%d.cpu.pprof", n)); f != "" {
		if _, err := mgr.call("cpu-start " + f); err != nil {
			return rc, err
		}
	}
	var apiProfile <-chan error
	if f := opts.profile(fmt.Sprintf("apiserver-run%d.cpu.pprof", n)); f != "" {
		apiProfile = profileAPIServer(ctx, cfg, 20*time.Second, f)
	}
	plane0, start := readPlaneCPU(), time.Now()
	for i := 0; i < opts.Policies; i++ {
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
	want := int64(total / n) // total counts the earlier runs' backups too
	for {
		var have int64
		if opts.PollList {
			var pvbs metav1.PartialObjectMetadataList
			pvbs.SetGroupVersionKind(v1.GroupVersion.WithKind("PodVolumeBackupList"))
			if err := c.List(ctx, &pvbs); err != nil {
				return rc, err
			}
			have = int64(len(pvbs.Items) - (total - int(want)))
		} else {
			st, err := mgr.call("state")
			if err != nil {
				return rc, err
			}
			have = st.CreatedBackups - before.CreatedBackups
		}
		if have >= want {
			break
		}
		if time.Since(start) > 20*time.Minute {
			return rc, fmt.Errorf("%d of %d PodVolumeBackups exist after 20 minutes", have, want)
		}
		wait := 100 * time.Millisecond
		if opts.PollList {
			wait = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return rc, ctx.Err()
		case <-time.After(wait):
		}
	}
	rc.Took = time.Since(start)
	plane := readPlaneCPU().sub(plane0)
	rc.APIServerCPU, rc.EtcdCPU = plane.APIServer, plane.Etcd
	mid, err := mgr.call("state")
	if err != nil {
		return rc, err
	}
	rc.ManagerCPU = mid.CPU - before.CPU
	// Let the controller settle (its last status patches) before counting.
	if err := waitPolicies(ctx, c, opts.Policies, func(p *v1.VolumeBackupPolicy) bool {
		return p.Status.LastRun != nil && p.Status.LastRunNowToken == token
	}); err != nil {
		return rc, err
	}
	var pvbs metav1.PartialObjectMetadataList
	pvbs.SetGroupVersionKind(v1.GroupVersion.WithKind("PodVolumeBackupList"))
	if err := c.List(ctx, &pvbs); err != nil {
		return rc, err
	}
	if len(pvbs.Items) < total {
		return rc, fmt.Errorf("%d PodVolumeBackups exist, not %d", len(pvbs.Items), total)
	}
	if opts.ProfileDir != "" {
		if _, err := mgr.call("cpu-stop"); err != nil {
			return rc, err
		}
		if _, err := mgr.call("heap " + opts.profile(fmt.Sprintf("manager-run%d.heap.pprof", n))); err != nil {
			return rc, err
		}
		if err := <-apiProfile; err != nil {
			return rc, err
		}
	}
	after, err := mgr.call("state")
	if err != nil {
		return rc, err
	}
	rc.Requests = map[string]int64{}
	for k, v := range after.Requests {
		if d := v - before.Requests[k]; d > 0 {
			rc.Requests[k] = d
			rc.RequestsTotal += d
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
	err := inParallel(16, len(pvbs.Items), func(i int) error {
		b := &pvbs.Items[i]
		b.Status.Phase = v1.RunCompleted
		if err := c.Status().Update(ctx, b); err != nil {
			return fmt.Errorf("completing PodVolumeBackup %s/%s: %w", b.Namespace, b.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
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
	return inParallel(32, opts.Namespaces, func(i int) error { return populateNamespace(ctx, c, i, opts) })
}

// inParallel calls fn(0) … fn(n-1) on workers goroutines and returns the first error;
// after one, no further call starts.
func inParallel(workers, n int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
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
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, bare := range r.Bare {
		row(fmt.Sprintf("bare client, %d create(s) at a time → %d PodVolumeBackups exist", bare.Workers, bare.Objects),
			fmt.Sprintf("%s (%.0f/s)", ms(bare.Took), bare.PerSecond()))
	}
	row("manager start → every policy's status up to date", ms(r.Initial))
	row("one policy's selector changed → its status up to date", ms(r.ChangeOne))
	row("all policies' selectors changed → all statuses up to date", ms(r.ChangeAll))
	runRows := func(name string, rc RunCost) {
		row(fmt.Sprintf("%s → all %d PodVolumeBackups exist", name, r.Backups), ms(rc.Took))
		row("  × the bare client's time (one at a time / parallel)", bareRatios(rc.Took, r.Bare))
		row("  manager API requests", requests(rc.RequestsTotal, rc.Requests))
		row("  CPU: manager / API server / etcd", fmt.Sprintf("%s / %s / %s", ms(rc.ManagerCPU), ms(rc.APIServerCPU), ms(rc.EtcdCPU)))
	}
	runRows("run-now on every policy (first run)", r.First)
	row("BackupRepositories the first run created", fmt.Sprint(r.Repositories))
	runRows("later run (repositories exist)", r.Later)
	for _, bare := range r.BareAfter {
		row(fmt.Sprintf("bare client after the runs, %d create(s) at a time", bare.Workers), fmt.Sprintf("%s (%.0f/s)", ms(bare.Took), bare.PerSecond()))
	}
	row("manager CPU: start / all changed", fmt.Sprintf("%s / %s", ms(r.InitialCPU), ms(r.ChangeAllCPU)))
	row("manager process peak RSS", fmt.Sprintf("%d MiB (Go settings of the Deployment: %s)", r.PeakRSS>>20, strings.Join(r.ManagerGoEnv, " ")))
	row("manager Go heap: peak in objects / in use after the runs (after GC)", fmt.Sprintf("%d MiB / %d MiB", r.PeakHeap>>20, r.HeapAfterRuns>>20))
	row("bench process peak RSS (setup client, baseline, polling)", fmt.Sprintf("%d MiB", r.BenchPeakRSS>>20))
	row("setup: creating namespaces and pods (bench client)", ms(r.Populate))
	b.WriteString("\n")
	return b.String()
}

func bareRatios(d time.Duration, bare []BareCreate) string {
	var parts []string
	for _, b := range bare {
		parts = append(parts, fmt.Sprintf("%.2f×", d.Seconds()/b.Took.Seconds()))
	}
	return strings.Join(parts, " / ")
}

func requests(total int64, byKind map[string]int64) string {
	var kinds []string
	for k, v := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d (%s)", total, strings.Join(kinds, ", "))
}
