package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/internal/identity"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Condition reasons of a VolumeBackupPolicy.
const (
	ReasonInvalidSelector = "InvalidSelector"
	ReasonInvalidSchedule = "InvalidSchedule"
	ReasonSuspended       = "Suspended"
	ReasonRunInProgress   = "RunInProgress"
	ReasonSelecting       = "Selecting"
	// ReasonStorageLocationNotReady: the storage location is missing or not Ready;
	// runs back up nothing until it is.
	ReasonStorageLocationNotReady = "StorageLocationNotReady"
	// ReasonSelectorBudgetExceeded: a selection pass spent its CEL cost budget; the
	// volumes it did not evaluate are skipped as SelectorBudgetExceeded.
	ReasonSelectorBudgetExceeded = "SelectorBudgetExceeded"
	// ReasonWaitingForStorageLocation: the storage location has not been probed yet;
	// a due run waits for the probe.
	ReasonWaitingForStorageLocation = "WaitingForStorageLocation"
	TriggerSchedule                 = "Schedule"
	TriggerRunNow                   = "RunNow"
	fieldOwner                      = "holdfast-policy-controller"
)

// VolumeBackupPolicyReconciler selects volumes for each VolumeBackupPolicy, reports the
// selection in status and starts its runs.
type VolumeBackupPolicyReconciler struct {
	client.Client
	Engine   *celpolicy.Engine
	Recorder record.EventRecorder
	// APIReader reads the policy straight from the API server before a run starts:
	// the cache can lag behind the status this controller just wrote, and a stale
	// view would handle the same run-now token or schedule tick twice. Nil skips the
	// check (single-step tests).
	APIReader client.Reader
	// Clock is the time source; tests drive it. Nil is the real clock.
	Clock clock.PassiveClock
	// CostBudget is the CEL cost one selection pass may spend; 0 is
	// celpolicy.PassCostBudget.
	CostBudget uint64
	// HostPathRoots are the host directories under which claims on hostPath
	// PersistentVolumes are backed up; claims on others are skipped HostPath.
	HostPathRoots hostpath.Roots
	// Reader configures the reader pods that back up claims no pod uses.
	Reader restore.ClaimPodOptions
	// Cache is the manager's cache: a selection pass takes the pods from its informer
	// without copying them. Nil reads them through Client.
	Cache cache.Cache
	// MaxConcurrentCreates is how many creates of a run's PodVolumeBackups (and
	// BackupRepositories) one pass has in flight at once; 0 is
	// DefaultMaxConcurrentCreates.
	MaxConcurrentCreates int
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;persistentvolumeclaims;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=create;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=persistentvolumes,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// scope carries what the steps of one reconcile found. Each field says which step
// sets it; doc.go describes the run state machine these steps drive.
type scope struct {
	policy *v1.VolumeBackupPolicy
	// selector and schedule are set by reconcileSpec.
	selector *celpolicy.Selector
	schedule *cronSchedule
	now      time.Time
	// sel is set by reconcileSelection (InFlight applied for the current run) and
	// filtered again by startRun for a new run.
	sel *selection
	// requeue is the shortest wait any step asked for.
	requeue time.Duration
	// stale is set by staleView when the cached policy is older than the API
	// server's: the pass ends without writing anything.
	stale bool
	// creating is set by createDueBackups while the last run still has volumes to
	// start (jitter) or creates to retry: the policy is Reconciling.
	creating bool
	// created is set by createDueBackups: <namespace>/<name> of the last run's
	// PodVolumeBackups that exist after this pass, some perhaps not in the cache yet.
	created map[string]bool
	// unfinished is set by reconcileSelection: <namespace><sourcePath> to the run of
	// its unfinished backup.
	unfinished map[string]string
	// locationProblem is set by reconcileStorageLocation: why the storage location
	// cannot take backups (missing, not Ready); a run started now fails at once with it.
	locationProblem string
	// locationUnprobed is set by reconcileStorageLocation while the storage location
	// has not been probed yet: a due run waits instead of failing on a location that
	// may well be fine.
	locationUnprobed bool
	// snap is set by reconcileSelection: the cluster the selection read.
	snap *snapshot
	// backups is set by reconcileSelection: the policy's PodVolumeBackups by
	// <namespace>/<name>.
	backups map[string]*v1.PodVolumeBackup
	// podHooks is filled by createDueBackups: the hooks of each pod it met, resolved
	// once per pass.
	podHooks map[types.UID]podHooks
	// compiledHookPods is filled by createDueBackups: the pods expression of each
	// hook, compiled once per pass.
	compiledHookPods map[int]compiledHookPods
}

// Reconcile gets the policy, runs the steps in order and patches the status once.
func (r *VolumeBackupPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	p := &v1.VolumeBackupPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Engine.Forget(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // deleting: its backups are retained or removed by deletionPolicy elsewhere
	}
	base := p.DeepCopy()
	if p.Status.ObservedGeneration == 0 {
		// The first status write must carry the counts even when they are 0: a merge
		// patch leaves out what did not change, and `kubectl get vbp` would show an
		// empty Skipped column instead of 0.
		base.Status.SelectedNamespaces, base.Status.SelectedVolumes, base.Status.SkippedVolumes = -1, -1, -1
	}
	s := &scope{policy: p, now: r.now()}
	defer func() {
		if s.stale {
			// Nothing computed from a stale view may be written; the newer status
			// brings the policy back.
			return
		}
		if err := r.Status().Patch(ctx, p, client.MergeFrom(base), client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("patching the status of VolumeBackupPolicy %s: %w", p.Name, err))
		}
	}()
	steps := []func(context.Context, *scope) error{
		r.reconcileSpec,
		r.reconcileSelection,
		r.reconcileStorageLocation,
		r.reconcileRun,
		r.reconcileReaders,
		r.reconcileLastRun,
		r.reconcileReady,
	}
	for _, step := range steps {
		if err := step(ctx, s); err != nil {
			// A step stops in one of three typed ways (conditions.Stall, Wait, or a
			// transient error), mapped to conditions and a requeue in one place.
			res, err := conditions.Result(&p.Status.Conditions, p.Generation, err)
			if err != nil {
				return res, fmt.Errorf("VolumeBackupPolicy %s: %w", p.Name, err)
			}
			return res, nil
		}
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// budgetMessage says that a selection pass spent its CEL cost budget and what to do.
func budgetMessage(sel *selection) string {
	return fmt.Sprintf("a selection pass spent its CEL cost budget (%d units spent) and did not evaluate %d volumes (skipped as %s): narrow the namespace expression, or test cheap fields before iterating over labels and annotations",
		sel.spent, len(sel.skipped[SkipSelectorBudgetExceeded]), SkipSelectorBudgetExceeded)
}

// policyLabel and locationLabel are the label values naming a policy and a storage
// location on the objects a run creates, and the values they are selected by: names
// of up to 253 characters are shortened with a hash to fit a label value (review M8).
func policyLabel(name string) string   { return identity.LabelValue(name) }
func locationLabel(name string) string { return identity.LabelValue(name) }

func (r *VolumeBackupPolicyReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now().UTC()
	}
	return r.Clock.Now().UTC()
}

// reconcileSpec compiles the selector and parses the schedule. A policy that does
// not compile is Stalled with the field path and the compiler's message, and nothing
// else is done with it (the webhook normally rejects it; it got in while the webhook was
// down). Sets: Stalled, Ready=False on failure.
func (r *VolumeBackupPolicyReconciler) reconcileSpec(ctx context.Context, s *scope) error {
	p := s.policy
	sel, err := r.Engine.ForPolicy(p)
	if err != nil {
		if !stalledWith(p, ReasonInvalidSelector, err.Error()) {
			r.Recorder.Event(p, corev1.EventTypeWarning, ReasonInvalidSelector, err.Error())
			log.FromContext(ctx).Info("selector does not compile", "error", err.Error())
		}
		p.Status.ObservedGeneration = p.Generation
		p.Status.NextScheduleTime = nil
		return conditions.Stall(ReasonInvalidSelector, "%s", err.Error())
	}
	sched, err := parseSchedule(p.Spec.Schedule)
	if err != nil {
		if !stalledWith(p, ReasonInvalidSchedule, err.Error()) {
			r.Recorder.Event(p, corev1.EventTypeWarning, ReasonInvalidSchedule, err.Error())
		}
		p.Status.ObservedGeneration = p.Generation
		p.Status.NextScheduleTime = nil
		return conditions.Stall(ReasonInvalidSchedule, "%s", err.Error())
	}
	s.selector, s.schedule = sel, sched
	return nil
}

func stalledWith(p *v1.VolumeBackupPolicy, reason, msg string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.ConditionStalled && c.Status == metav1.ConditionTrue && c.Reason == reason && c.Message == msg {
			return true
		}
	}
	return false
}

// reconcileStorageLocation reads the policy's storage location. A missing or failing
// location is not a reason to skip a due run silently: the run is recorded as Failed
// with the location's own sentence (startRun), and the policy is not Ready. Sets no
// condition (reconcileReady does).
func (r *VolumeBackupPolicyReconciler) reconcileStorageLocation(ctx context.Context, s *scope) error {
	name := s.policy.Spec.StorageLocation
	bsl := &v1.BackupStorageLocation{}
	err := r.Get(ctx, client.ObjectKey{Name: name}, bsl)
	switch {
	case apierrors.IsNotFound(err):
		s.locationProblem = fmt.Sprintf("storage location %q does not exist", name)
	case err != nil:
		return fmt.Errorf("getting BackupStorageLocation %s: %w", name, err)
	case conditions.IsReady(bsl.Status.Conditions):
	case apimeta.IsStatusConditionFalse(bsl.Status.Conditions, v1.ConditionReady):
		s.locationProblem = fmt.Sprintf("storage location %q is not Ready: %s", name, conditions.ReadyMessage(bsl.Status.Conditions))
	default:
		s.locationUnprobed = true
	}
	return nil
}

// reconcileReady marks the policy Ready when its selector and schedule work, unless a
// run is still being created (Reconciling). Sets observedGeneration after a clean pass.
func (r *VolumeBackupPolicyReconciler) reconcileReady(ctx context.Context, s *scope) error {
	p := s.policy
	p.Status.ObservedGeneration = p.Generation
	if s.creating {
		return nil // Reconciling until every volume of the run has started
	}
	msg := fmt.Sprintf("%d volumes selected in %d namespaces, %d skipped", p.Status.SelectedVolumes, p.Status.SelectedNamespaces, p.Status.SkippedVolumes)
	switch {
	case s.locationProblem != "":
		conditions.MarkNotReady(&p.Status.Conditions, p.Generation, ReasonStorageLocationNotReady,
			s.locationProblem+"; runs back up nothing until it is Ready ("+msg+")")
		return nil
	case s.locationUnprobed:
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonWaitingForStorageLocation,
			fmt.Sprintf("waiting for the first probe of storage location %q (%s)", p.Spec.StorageLocation, msg))
		return nil
	case s.sel != nil && s.sel.budgetExceeded:
		conditions.MarkNotReady(&p.Status.Conditions, p.Generation, ReasonSelectorBudgetExceeded, budgetMessage(s.sel)+" ("+msg+")")
		return nil
	}
	reason := conditions.ReasonSucceeded
	if p.Spec.Suspend {
		reason, msg = ReasonSuspended, "suspended: "+msg
	}
	conditions.MarkReady(&p.Status.Conditions, p.Generation, reason, msg)
	return nil
}

// SetupWithManager watches policies and everything a selection reads, mapping each
// change to the policies it can affect.
func (r *VolumeBackupPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("volumebackuppolicy-controller")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.PodVolumeBackup{}, sourceIndex, indexBySource); err != nil {
		return fmt.Errorf("indexing PodVolumeBackups by source: %w", err)
	}
	rsMeta := &metav1.PartialObjectMetadata{}
	rsMeta.SetGroupVersionKind(replicaSetGVK)
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeBackupPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace), builder.WithPredicates(PodChangeMatters)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies)).
		// A claim is bound (its volumeName set) after its PersistentVolume exists, but
		// the caches may see them in either order.
		Watches(&corev1.PersistentVolume{}, handler.EnqueueRequestsFromMapFunc(r.policiesForClaimOf)).
		Watches(&v1.PodVolumeBackup{}, handler.EnqueueRequestsFromMapFunc(policyOfBackup)).
		Watches(&v1.BackupStorageLocation{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfLocation)).
		WatchesMetadata(rsMeta, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace), builder.OnlyMetadata).
		Complete(r)
}

// PodChangeMatters drops pod updates that cannot change a selection (container
// statuses, conditions, IPs): on a busy cluster they are most pod events. Coverage,
// which selects as runs do, uses it too.
var PodChangeMatters = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Pod)
		n, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return o.Status.Phase != n.Status.Phase || o.Spec.NodeName != n.Spec.NodeName ||
			!o.DeletionTimestamp.Equal(n.DeletionTimestamp) ||
			!equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(o.Annotations, n.Annotations) ||
			!equality.Semantic.DeepEqual(o.OwnerReferences, n.OwnerReferences)
	},
}

// policiesForNamespace maps a namespaced object to the policies whose namespace
// selector accepts its namespace (or that cannot be evaluated: they get the event too).
func (r *VolumeBackupPolicyReconciler) policiesForNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies, client.UnsafeDisableDeepCopy); err != nil { // read only
		return nil
	}
	ns := &corev1.Namespace{}
	nsErr := r.Get(ctx, client.ObjectKey{Name: obj.GetNamespace()}, ns)
	var out []reconcile.Request
	for i := range policies.Items {
		p := &policies.Items[i]
		if nsErr == nil {
			if sel, err := r.Engine.ForPolicy(p); err == nil {
				if ok, err := sel.MatchNamespace(ns, nil); err == nil && !ok {
					continue
				}
			}
		}
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
	}
	return out
}

// policiesForClaimOf maps a PersistentVolume to the policies of its claim's namespace.
func (r *VolumeBackupPolicyReconciler) policiesForClaimOf(ctx context.Context, obj client.Object) []reconcile.Request {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.ClaimRef == nil {
		return nil
	}
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}}
	return r.policiesForNamespace(ctx, claim)
}

// policiesOfLocation maps a storage location to the policies that back up to it.
func (r *VolumeBackupPolicyReconciler) policiesOfLocation(ctx context.Context, obj client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies, client.UnsafeDisableDeepCopy); err != nil { // read only
		return nil
	}
	var out []reconcile.Request
	for _, p := range policies.Items {
		if p.Spec.StorageLocation == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
		}
	}
	return out
}

func (r *VolumeBackupPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies, client.UnsafeDisableDeepCopy); err != nil { // read only
		return nil
	}
	out := make([]reconcile.Request, 0, len(policies.Items))
	for _, p := range policies.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
	}
	return out
}

func policyOfBackup(_ context.Context, obj client.Object) []reconcile.Request {
	pvb, ok := obj.(*v1.PodVolumeBackup)
	if !ok {
		return nil
	}
	name := identity.PolicyOfBackup(pvb)
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
}
