package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Labels on repository key Secrets, so a changed Secret finds its repository.
const (
	LabelRepositoryNamespace = "backup.holdfast.dev/repository-namespace"
	LabelRepositoryName      = "backup.holdfast.dev/repository"
	// AnnotationLastFullMaintenance records when kopia full maintenance last ran.
	AnnotationLastFullMaintenance = "backup.holdfast.dev/last-full-maintenance"
	// AnnotationMaintenanceRequested (an RFC 3339 time) on a BackupRepository asks
	// for one maintenance pass now, unless one has finished since that time: a way
	// to maintain (restic: prune) before the next maintenanceInterval.
	AnnotationMaintenanceRequested = "backup.holdfast.dev/maintenance-requested"
)

// Condition and event reasons of repositories.
const (
	ReasonRepositoryReady      = "RepositoryReady"
	ReasonWaitingForLocation   = "WaitingForStorageLocation"
	ReasonKeySecretCreated     = "KeySecretCreated"
	ReasonInitialized          = "Initialized"
	ReasonMaintenanceSucceeded = "MaintenanceSucceeded"
	ReasonMaintenanceFailed    = "MaintenanceFailed"
	// ReasonMaintenanceDeferred: the repository was locked by a backup or restore.
	ReasonMaintenanceDeferred = "MaintenanceDeferred"
)

// maintenanceDeferRetry is when maintenance that met a locked repository is tried
// again.
const maintenanceDeferRetry = 5 * time.Minute

// Repository-side retry when the store is unreachable.
const storeRetry = time.Minute

// RepositoryReconciler gives each BackupRepository its own key (stored in a Secret in
// the operator namespace before anything is written), initialises or connects the
// repository, and runs its maintenance with bounded concurrency.
type RepositoryReconciler struct {
	client.Client
	Secrets     client.Reader
	SecretCache cache.Cache
	Recorder    record.EventRecorder
	Namespace   string
	Pool        *Pool

	// maintenance is a semaphore: its capacity is the number of passes at once.
	maintenance chan struct{}
	now         func() time.Time
	// lastRun remembers passes whose status the cache may not show yet, so a
	// reconcile on a stale copy never starts a second pass right after the first.
	lastRun sync.Map // namespace/name -> time.Time
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=secrets,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile fetches the repository, then runs: resolve the store, ensure the key,
// open or initialise, maintain; status is patched once at the end.
func (r *RepositoryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, req.NamespacedName, brepo); err != nil {
		if apierrors.IsNotFound(err) {
			r.Pool.Forget(ctx, req.String())
			r.lastRun.Delete(req.String())
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := brepo.DeepCopy()
	wasReady := conditions.IsReady(brepo.Status.Conditions)
	defer func() {
		if perr := r.Status().Patch(ctx, brepo, client.MergeFrom(base)); perr != nil && !apierrors.IsNotFound(perr) {
			err = errors.Join(err, fmt.Errorf("patching the status of repository %s: %w", req, perr))
		}
		if !wasReady && conditions.IsReady(brepo.Status.Conditions) {
			log.FromContext(ctx).Info("repository is ready", "url", brepo.Status.URL)
			r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonRepositoryReady, "Repository is ready: "+brepo.Status.URL)
		}
	}()
	if !conditions.IsReady(brepo.Status.Conditions) && !conditions.IsStalled(brepo.Status.Conditions) {
		conditions.MarkReconciling(&brepo.Status.Conditions, brepo.Generation, conditions.ReasonProgressing, "Connecting to the repository")
	}
	rep, result, err := r.connect(ctx, brepo)
	if rep == nil {
		return result, err
	}
	defer rep.Close(ctx) //nolint:errcheck // returns the pool's loan
	conditions.MarkReady(&brepo.Status.Conditions, brepo.Generation, ReasonRepositoryReady, "Repository is ready at "+rep.URL())
	brepo.Status.URL = rep.URL()
	brepo.Status.ObservedGeneration = brepo.Generation
	return r.maintain(ctx, brepo, rep)
}

// connect resolves the store and the key and opens (initialising if there is none yet)
// the repository. It returns nil and sets Ready=False (waiting, retrying) or
// Stalled (only the user can fix it) when it cannot.
func (r *RepositoryReconciler) connect(ctx context.Context, brepo *v1.BackupRepository) (repository.Repository, ctrl.Result, error) {
	gen := brepo.Generation
	bsl := &v1.BackupStorageLocation{}
	if err := r.Get(ctx, types.NamespacedName{Name: brepo.Spec.StorageLocation}, bsl); err != nil {
		if apierrors.IsNotFound(err) {
			conditions.MarkNotReady(&brepo.Status.Conditions, gen, ReasonWaitingForLocation,
				fmt.Sprintf("Storage location %s does not exist", brepo.Spec.StorageLocation))
			return nil, ctrl.Result{}, nil // the location is watched
		}
		return nil, ctrl.Result{}, err
	}
	if !conditions.IsReady(bsl.Status.Conditions) {
		msg := fmt.Sprintf("Waiting for storage location %s to be Ready", bsl.Name)
		if m := conditions.ReadyMessage(bsl.Status.Conditions); m != "" {
			msg += ": " + m
		}
		conditions.MarkNotReady(&brepo.Status.Conditions, gen, ReasonWaitingForLocation, msg)
		return nil, ctrl.Result{}, nil
	}
	store, _, err := storeFor(ctx, r.Secrets, r.Namespace, bsl)
	if err != nil {
		conditions.MarkNotReady(&brepo.Status.Conditions, gen, ReasonWaitingForLocation, err.Error())
		return nil, ctrl.Result{RequeueAfter: storeRetry}, nil
	}
	cfg := repository.Config{Store: store, Uploader: brepo.Spec.Uploader, Namespace: brepo.Namespace, Owner: repository.ManagerOwner}
	brepo.Status.URL = cfg.URL()
	secret, err := r.ensureKey(ctx, brepo, cfg)
	if err == nil {
		brepo.Status.KeySecretName = secret.Name
		cfg.Password, err = repository.PasswordFromSecret(secret)
	}
	if err != nil {
		result, err := r.keyFailed(ctx, brepo, err)
		return nil, result, err
	}
	key := client.ObjectKeyFromObject(brepo).String()
	rep, err := r.Pool.Open(ctx, key, cfg)
	if errors.Is(err, repository.ErrNotInitialized) {
		// The escrow goes first: no data may exist whose key is not escrowed where the
		// location asks for it.
		if err = r.escrowBeforeInit(ctx, brepo, bsl, cfg, secret); err != nil {
			result, err := r.keyFailed(ctx, brepo, err)
			return nil, result, err
		}
		if err = repository.Initialize(ctx, r.Pool.Config(cfg)); err == nil {
			log.FromContext(ctx).Info("initialised repository", "url", cfg.URL())
			r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonInitialized, "Initialised a new repository at "+cfg.URL())
			rep, err = r.Pool.Open(ctx, key, cfg)
		}
	}
	if err != nil {
		result, err := r.openFailed(ctx, brepo, err)
		return nil, result, err
	}
	if err := r.ensureEscrow(ctx, brepo, bsl, cfg, secret); err != nil {
		_ = rep.Close(ctx) // returns the pool's loan
		result, err := r.keyFailed(ctx, brepo, err)
		return nil, result, err
	}
	return rep, ctrl.Result{}, nil
}

// keyFailed stalls the repository on a key a person must fix (with an event when it
// newly stalls) and returns other errors for a retry.
func (r *RepositoryReconciler) keyFailed(ctx context.Context, brepo *v1.BackupRepository, err error) (ctrl.Result, error) {
	var st *stallError
	if !errors.As(err, &st) {
		var re *repository.Error
		if errors.As(err, &re) {
			conditions.MarkNotReady(&brepo.Status.Conditions, brepo.Generation, re.Reason(), re.Error())
			return ctrl.Result{RequeueAfter: storeRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("repository %s/%s: %w", brepo.Namespace, brepo.Name, err)
	}
	log.FromContext(ctx).Info("repository key needs a person", "reason", st.reason, "message", st.message)
	if c := meta.FindStatusCondition(brepo.Status.Conditions, v1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != st.reason {
		r.Recorder.Event(brepo, corev1.EventTypeWarning, st.reason, st.message)
	}
	conditions.MarkStalled(&brepo.Status.Conditions, brepo.Generation, st.reason, st.message)
	brepo.Status.ObservedGeneration = brepo.Generation
	return ctrl.Result{}, nil // Secrets and the location are watched
}

// openFailed classifies an open/initialise error: a wrong key, damage or foreign data
// stall the repository (nothing is written; a person must act), a store problem is
// retried.
func (r *RepositoryReconciler) openFailed(ctx context.Context, brepo *v1.BackupRepository, err error) (ctrl.Result, error) {
	gen := brepo.Generation
	var re *repository.Error
	if !errors.As(err, &re) {
		return ctrl.Result{}, fmt.Errorf("opening repository %s/%s: %w", brepo.Namespace, brepo.Name, err)
	}
	log.FromContext(ctx).Info("repository cannot be used", "reason", re.Reason(), "message", re.Error(), "cause", re.Cause())
	switch re.Kind() {
	case repository.ErrWrongKey, repository.ErrDamaged, repository.ErrExistingData:
		if !conditions.IsStalled(brepo.Status.Conditions) {
			r.Recorder.Event(brepo, corev1.EventTypeWarning, re.Reason(), re.Error())
		}
		conditions.MarkStalled(&brepo.Status.Conditions, gen, re.Reason(), re.Error())
		brepo.Status.ObservedGeneration = gen
		return ctrl.Result{}, nil
	}
	conditions.MarkNotReady(&brepo.Status.Conditions, gen, re.Reason(), re.Error())
	return ctrl.Result{RequeueAfter: storeRetry}, nil
}

// maintain runs maintenance when it is due and a slot is free, and records the
// result in status.maintenance, status.lastMaintenanceTime and an event.
func (r *RepositoryReconciler) maintain(ctx context.Context, brepo *v1.BackupRepository, rep repository.Repository) (ctrl.Result, error) {
	now := r.clock()
	interval := time.Hour
	if brepo.Spec.MaintenanceInterval != nil && brepo.Spec.MaintenanceInterval.Duration > 0 {
		interval = brepo.Spec.MaintenanceInterval.Duration
	}
	key := client.ObjectKeyFromObject(brepo).String()
	var last time.Time
	if brepo.Status.LastMaintenanceTime != nil {
		last = brepo.Status.LastMaintenanceTime.Time
	}
	if v, ok := r.lastRun.Load(key); ok && v.(time.Time).After(last) {
		last = v.(time.Time)
	}
	requested, _ := time.Parse(time.RFC3339Nano, brepo.Annotations[AnnotationMaintenanceRequested])
	if !last.IsZero() && !requested.After(last) {
		if due := last.Add(interval); due.After(now) {
			return ctrl.Result{RequeueAfter: due.Sub(now)}, nil
		}
	}
	select {
	case r.maintenance <- struct{}{}:
		defer func() { <-r.maintenance }()
	default:
		log.FromContext(ctx).V(1).Info("maintenance is due but every maintenance slot is busy")
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	}
	var lastFull time.Time
	if s := brepo.Annotations[AnnotationLastFullMaintenance]; s != "" {
		lastFull, _ = time.Parse(time.RFC3339, s)
	}
	mode := repository.ModeFor(brepo.Spec.Uploader, lastFull, now)
	log.FromContext(ctx).Info("running maintenance", "mode", mode)
	res, err := rep.Maintain(ctx, repository.MaintenanceRequest{Mode: mode})
	// Closing waits for kopia's asynchronous writes (maintenance logs), so that once
	// status says the pass finished, the store no longer changes because of it.
	r.Pool.Forget(ctx, key)
	entry := v1.MaintenanceResult{Mode: string(mode), Result: "Succeeded", StartTime: metav1.NewTime(res.StartTime),
		CompletionTime: ptr(metav1.NewTime(res.CompletionTime)), Message: truncate(res.Message, 1024)}
	if errors.Is(err, repository.ErrLocked) {
		// A long backup or restore holds the lock: not a failure, and maintenance stays
		// due, so it runs in the next gap between them.
		entry.Result, entry.Message = "Deferred", truncate(err.Error(), 1024)
		r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonMaintenanceDeferred, fmt.Sprintf("%s maintenance deferred, tried again in %s: %v", mode, maintenanceDeferRetry, err))
		log.FromContext(ctx).Info("maintenance deferred: the repository is locked", "mode", mode)
		brepo.Status.Maintenance = append([]v1.MaintenanceResult{entry}, brepo.Status.Maintenance...)
		if len(brepo.Status.Maintenance) > 5 {
			brepo.Status.Maintenance = brepo.Status.Maintenance[:5]
		}
		return ctrl.Result{RequeueAfter: min(maintenanceDeferRetry, interval)}, nil
	}
	r.lastRun.Store(key, res.CompletionTime)
	// The pass may have removed data: measure what the repository now occupies.
	if usage, uerr := rep.Usage(ctx); uerr != nil {
		log.FromContext(ctx).Info("cannot measure the repository's size in the store", "error", uerr.Error())
	} else {
		brepo.Status.StoreUsage = &v1.StoreUsage{Bytes: usage.Bytes, Objects: usage.Objects, MeasuredTime: metav1.NewTime(r.clock())}
		res.Message += fmt.Sprintf("; the repository holds %s in %d objects", FormatBytes(usage.Bytes), usage.Objects)
		entry.Message = truncate(res.Message, 1024)
	}
	if err != nil {
		entry.Result, entry.Message = "Failed", truncate(err.Error(), 1024)
		r.Recorder.Event(brepo, corev1.EventTypeWarning, ReasonMaintenanceFailed, fmt.Sprintf("%s maintenance failed: %v", mode, err))
		log.FromContext(ctx).Info("maintenance failed", "mode", mode, "error", err.Error())
	} else {
		r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonMaintenanceSucceeded, res.Message)
		if mode == repository.MaintenanceFull {
			patch := client.MergeFrom(brepo.DeepCopy())
			if brepo.Annotations == nil {
				brepo.Annotations = map[string]string{}
			}
			brepo.Annotations[AnnotationLastFullMaintenance] = res.CompletionTime.UTC().Format(time.RFC3339)
			status := brepo.Status
			if perr := r.Patch(ctx, brepo, patch); perr != nil {
				return ctrl.Result{}, perr
			}
			brepo.Status = status
		}
	}
	brepo.Status.LastMaintenanceTime = entry.CompletionTime
	brepo.Status.Maintenance = append([]v1.MaintenanceResult{entry}, brepo.Status.Maintenance...)
	if len(brepo.Status.Maintenance) > 5 {
		brepo.Status.Maintenance = brepo.Status.Maintenance[:5]
	}
	return ctrl.Result{RequeueAfter: interval}, nil
}

// FormatBytes writes n in binary units with one decimal (15.1 KiB, 3.0 GiB).
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (r *RepositoryReconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// SetupWithManager watches repositories, the storage locations they use and their key
// Secrets. Maintenance slots bound the passes; other reconciles still proceed.
func (r *RepositoryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.BackupRepository{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, maintenanceRequested))).
		Watches(&v1.BackupStorageLocation{}, handler.EnqueueRequestsFromMapFunc(r.repositoriesForLocation),
			builder.WithPredicates(locationReadinessChanged)).
		WatchesRawSource(source.Kind(r.SecretCache, &corev1.Secret{}, handler.TypedEnqueueRequestsFromMapFunc(r.repositoryForSecret))).
		WithOptions(controller.Options{MaxConcurrentReconciles: cap(r.maintenance) + 2}).
		Named("backuprepository").
		Complete(r)
}

// maintenanceRequested passes a change of AnnotationMaintenanceRequested.
var maintenanceRequested = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetAnnotations()[AnnotationMaintenanceRequested] != e.ObjectNew.GetAnnotations()[AnnotationMaintenanceRequested]
	},
}

// locationReadinessChanged passes a storage location's changes that matter to its
// repositories (spec or readiness), not every periodic probe's status update.
var locationReadinessChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1.BackupStorageLocation), e.ObjectNew.(*v1.BackupStorageLocation)
		return o.Generation != n.Generation || conditions.IsReady(o.Status.Conditions) != conditions.IsReady(n.Status.Conditions)
	},
}

func (r *RepositoryReconciler) repositoriesForLocation(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1.BackupRepositoryList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, b := range list.Items {
		if b.Spec.StorageLocation == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&b)})
		}
	}
	return reqs
}

// repositoryForSecret maps a Secret of the operator namespace to the repository its
// labels name, and to every repository waiting for a person to fix its key: creating
// the recovery identity, restoring a key Secret or removing a conflicting one may be
// that fix.
func (r *RepositoryReconciler) repositoryForSecret(ctx context.Context, s *corev1.Secret) []reconcile.Request {
	if s.Namespace != r.Namespace {
		return nil
	}
	var reqs []reconcile.Request
	if ns, name := s.Labels[LabelRepositoryNamespace], s.Labels[LabelRepositoryName]; ns != "" && name != "" {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
	var list v1.BackupRepositoryList
	if err := r.List(ctx, &list); err != nil {
		return reqs
	}
	for i := range list.Items {
		// The label holds identity.LabelValue of a long repository name: match it here.
		if b := &list.Items[i]; b.Namespace == s.Labels[LabelRepositoryNamespace] && b.Name != s.Labels[LabelRepositoryName] &&
			identity.LabelValue(b.Name) == s.Labels[LabelRepositoryName] {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(b)})
		}
		if stalledOnKey(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

func ptr[T any](v T) *T { return &v }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
