package coverage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Event reasons on claims.
const (
	// EventUnprotected (Warning): the claim became unprotected.
	EventUnprotected = "Unprotected"
	// EventProtected (Normal): a claim this manager reported unprotected is protected.
	EventProtected = "Protected"
	fieldOwner     = "holdfast-coverage-controller"
)

// DefaultInterval is the shortest time between two computations: changes that come
// faster are folded into the next one.
const DefaultInterval = 30 * time.Second

// resync recomputes even when nothing was seen to change (a node's OS label, which is
// not watched).
const resync = 10 * time.Minute

// maxEventsPerPass bounds the events one computation writes: the claims past it are
// announced by the next computations, so a first pass on a large cluster does not
// flood the API server.
const maxEventsPerPass = 50

// Options configure the coverage controller.
type Options struct {
	// Interval is the shortest time between two computations; DefaultInterval when 0.
	Interval time.Duration
	// CostBudget is the CEL cost of each pass; 0 is celpolicy.PassCostBudget, as runs.
	CostBudget uint64
	// Namespace is the operator namespace: Holdfast's own pods there are not counted.
	Namespace string
	// Clock is time, for tests; the real clock when nil.
	Clock clock.PassiveClock
	// Engine is the policy controller's CEL engine (policyctrl.Setup), whose compiled
	// selectors coverage reuses; an engine of its own when nil.
	Engine *celpolicy.Engine
	// HostPathRoots are the policy controller's: a claim on a hostPath
	// PersistentVolume outside them is Skipped HostPath, as runs skip it.
	HostPathRoots hostpath.Roots
}

// VolumeCoverageReconciler keeps the VolumeCoverage named cluster, the coverage
// metrics and the claims' Unprotected events. Every watched change maps to the one
// object, so the work queue folds a burst of changes into one request.
type VolumeCoverageReconciler struct {
	client.Client
	Engine   *celpolicy.Engine
	Recorder events.EventRecorder
	Options

	mu sync.Mutex
	// lastComputed is when the last computation started; zero before the first.
	lastComputed time.Time
	// told is the coverage state of each claim (<namespace>/<name>) as the events
	// last told it: a claim is announced Unprotected when it enters that state, not on
	// every computation. It lives in memory: after a restart the first computations
	// announce every unprotected claim once more.
	told map[string]string
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumecoverages,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumecoverages/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;persistentvolumeclaims;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=persistentvolumes,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch

// Setup adds the coverage controller to the manager and registers its metrics on
// controller-runtime's registry.
func Setup(mgr ctrl.Manager, opts Options) error {
	engine := opts.Engine
	if engine == nil {
		var err error
		if engine, err = celpolicy.NewEngine(); err != nil {
			return fmt.Errorf("building the CEL engine: %w", err)
		}
	}
	r := &VolumeCoverageReconciler{Client: mgr.GetClient(), Engine: engine, Recorder: mgr.GetEventRecorder("holdfast-coverage"), Options: opts}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the coverage controller: %w", err)
	}
	registerMetrics()
	return nil
}

// Reconcile computes the coverage, unless the last computation is younger than the
// interval: then it comes back when it is not.
func (r *VolumeCoverageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name != v1.VolumeCoverageName {
		return ctrl.Result{}, nil // not ours: only the singleton is kept
	}
	now := r.now()
	r.mu.Lock()
	// Before the first computation lastComputed is zero and wait negative.
	wait := r.lastComputed.Add(r.interval()).Sub(now)
	r.mu.Unlock()
	if wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	cov, err := r.singleton(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	cluster, err := policyctrl.ReadCluster(ctx, r.Client, r.HostPathRoots)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading the cluster for coverage: %w", err)
	}
	policies, err := r.policies(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.mu.Lock()
	r.lastComputed = now
	r.mu.Unlock()
	start := time.Now()
	res := Compute(Input{Cluster: cluster, Policies: policies, CostBudget: r.CostBudget, OperatorNamespace: r.Namespace})
	ctrl.LoggerFrom(ctx).V(1).Info("computed coverage", "volumes", len(res.Volumes), "took", time.Since(start))
	metricsCollector.set(res)
	after := resync
	if heldBack := r.announce(ctx, cluster, res); heldBack {
		after = r.interval() // the claims past maxEventsPerPass are told at the next one
	}

	base := cov.DeepCopy()
	setStatus(&cov.Status, cov.Generation, res, metav1.NewTime(now))
	if !equality.Semantic.DeepEqual(base.Status, cov.Status) {
		if err := r.Status().Patch(ctx, cov, client.MergeFrom(base), client.FieldOwner(fieldOwner)); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching the status of VolumeCoverage %s: %w", cov.Name, err)
		}
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

func (r *VolumeCoverageReconciler) interval() time.Duration {
	if r.Interval <= 0 {
		return DefaultInterval
	}
	return r.Interval
}

func (r *VolumeCoverageReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// singleton gets the VolumeCoverage named cluster, creating it when it is missing
// (first start, or a user deleted it).
func (r *VolumeCoverageReconciler) singleton(ctx context.Context) (*v1.VolumeCoverage, error) {
	cov := &v1.VolumeCoverage{}
	err := r.Get(ctx, client.ObjectKey{Name: v1.VolumeCoverageName}, cov)
	if err == nil {
		return cov, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("getting VolumeCoverage %s: %w", v1.VolumeCoverageName, err)
	}
	cov = &v1.VolumeCoverage{ObjectMeta: metav1.ObjectMeta{Name: v1.VolumeCoverageName,
		Labels: map[string]string{v1.LabelManagedBy: v1.ManagedByValue}}}
	err = r.Create(ctx, cov, client.FieldOwner(fieldOwner))
	if apierrors.IsAlreadyExists(err) {
		// Created since the read (a cache that lags): read it again; if the cache
		// still lags, the error retries with backoff.
		err = r.Get(ctx, client.ObjectKey{Name: v1.VolumeCoverageName}, cov)
	}
	if err != nil {
		return nil, fmt.Errorf("creating VolumeCoverage %s: %w", v1.VolumeCoverageName, err)
	}
	return cov, nil
}

// policies compiles every policy that is not being deleted, with the same engine and
// cache-per-generation a run uses.
func (r *VolumeCoverageReconciler) policies(ctx context.Context) ([]Policy, error) {
	var list v1.VolumeBackupPolicyList
	if err := r.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing VolumeBackupPolicies: %w", err)
	}
	out := make([]Policy, 0, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		in := CompilePolicy(r.Engine, p)
		out = append(out, in)
	}
	return out, nil
}

// CompilePolicy compiles the selector and exclusion of p with engine, as every
// computation does: the manager's, and kubectl holdfast preview's for proposed
// policies. A selector or exclusion that does not compile is the Problem.
func CompilePolicy(engine *celpolicy.Engine, p *v1.VolumeBackupPolicy) Policy {
	in := Policy{Name: p.Name, Suspended: p.Spec.Suspend, ClaimsWithoutPods: p.Spec.ClaimsWithoutPods}
	var problems []error
	sel, err := engine.ForPolicy(p)
	if err != nil {
		problems = append(problems, err)
	} else {
		in.Selector = sel
	}
	exclusion, err := engine.ExclusionForPolicy(p)
	if err != nil {
		problems = append(problems, err)
	} else {
		in.Exclusion = exclusion
	}
	if len(problems) > 0 {
		in.Problem = errors.Join(problems...).Error()
	}
	return in
}

// announce writes an Unprotected event on each claim that became unprotected and a
// Protected event on each claim that was announced unprotected and is now protected.
// heldBack says that some were left for the next computation (maxEventsPerPass).
func (r *VolumeCoverageReconciler) announce(ctx context.Context, cluster *policyctrl.Cluster, res *Result) (heldBack bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.told == nil {
		r.told = map[string]string{}
	}
	next := make(map[string]string, len(r.told))
	sent := 0
	for i := range res.Volumes {
		v := &res.Volumes[i]
		if v.Claim == "" {
			continue
		}
		key := v.Namespace + "/" + v.Claim
		prev := r.told[key] // "" when never announced
		next[key] = v.State
		if (v.State == v1.CoverageUnprotected) == (prev == v1.CoverageUnprotected) {
			continue // no news: still unprotected, or still not
		}
		pvc := cluster.Claim(v.Namespace, v.Claim)
		if pvc == nil || sent == maxEventsPerPass {
			next[key] = prev // not told: the next computation tries again
			heldBack = heldBack || pvc != nil
			continue
		}
		sent++
		if v.State == v1.CoverageUnprotected {
			mount := "no running pod mounts it"
			if v.Pod != "" {
				mount = "mounted by pod " + v.Pod
			}
			r.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, EventUnprotected, "Coverage",
				"no VolumeBackupPolicy protects claim %s (%s) and no coverage exclusion matches it: select it in a policy, or exclude it with spec.coverage.exclude", v.Claim, mount)
			ctrl.LoggerFrom(ctx).Info("claim is unprotected", "namespace", v.Namespace, "claim", v.Claim)
			continue
		}
		msg := fmt.Sprintf("claim %s is %s by VolumeBackupPolicy %s", v.Claim, lower(v.State), v.Policy)
		if v.State == v1.CoverageSkipped {
			msg += " (skipped: " + v.Reason + ")"
		}
		r.Recorder.Eventf(pvc, nil, corev1.EventTypeNormal, v.State, "Coverage", "%s", msg)
		ctrl.LoggerFrom(ctx).Info("claim is no longer unprotected", "namespace", v.Namespace, "claim", v.Claim, "state", v.State, "policy", v.Policy)
	}
	r.told = next
	return heldBack
}

func lower(state string) string {
	switch state {
	case v1.CoverageProtected:
		return "protected"
	case v1.CoverageExcluded:
		return "excluded"
	case v1.CoverageSkipped:
		return "selected"
	}
	return state
}

// SetupWithManager maps every change that can move a volume's coverage to the one
// VolumeCoverage.
func (r *VolumeCoverageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("holdfast-coverage")
	}
	toSingleton := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: v1.VolumeCoverageName}}}
	})
	rsMeta := &metav1.PartialObjectMetadata{}
	rsMeta.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"})
	return ctrl.NewControllerManagedBy(mgr).
		Named("volumecoverage").
		// Its own status writes change no generation; a deletion brings it back.
		For(&v1.VolumeCoverage{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1.VolumeBackupPolicy{}, toSingleton, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, toSingleton, builder.WithPredicates(policyctrl.PodChangeMatters)).
		Watches(&corev1.PersistentVolumeClaim{}, toSingleton).
		Watches(&corev1.PersistentVolume{}, toSingleton).
		Watches(&corev1.Namespace{}, toSingleton).
		WatchesMetadata(rsMeta, toSingleton, builder.OnlyMetadata).
		Complete(r)
}
