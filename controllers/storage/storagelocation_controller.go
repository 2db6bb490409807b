package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Condition reasons of storage locations.
const (
	ReasonProbeSucceeded     = "ProbeSucceeded"
	ReasonCredentialsMissing = "CredentialsSecretMissing"
	ReasonInvalidCredentials = "InvalidCredentialsSecret"
	ReasonProbeFailed        = "ProbeFailed"
)

// Back-off of a failing probe: 10s, 20s, 40s ... at most 5 minutes (or the location's
// probe interval, if shorter).
const (
	probeBackoffMin = 10 * time.Second
	probeBackoffMax = 5 * time.Minute
)

// StorageLocationReconciler probes each BackupStorageLocation: Ready only after a
// real write, read back and delete; a failing store is Ready=False with a sentence
// saying what is wrong, and re-probed on a back-off.
type StorageLocationReconciler struct {
	client.Client
	// Secrets reads Secrets of the operator namespace without a cluster-wide cache.
	Secrets      client.Reader
	SecretCache  cache.Cache
	Recorder     record.EventRecorder
	Namespace    string
	ProbeTimeout time.Duration

	mu       sync.Mutex
	failures map[string]int
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile fetches the location, probes it and patches status once.
func (r *StorageLocationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	bsl := &v1.BackupStorageLocation{}
	if err := r.Get(ctx, req.NamespacedName, bsl); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := bsl.DeepCopy()
	wasReady := conditions.IsReady(bsl.Status.Conditions)
	result, probeErr := r.probe(ctx, bsl)
	if err := r.Status().Patch(ctx, bsl, client.MergeFrom(base)); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching the status of storage location %s: %w", bsl.Name, err)
	}
	r.event(ctx, bsl, wasReady, probeErr)
	return result, nil
}

// probe sets Ready (and lastProbeTime, url, observedGeneration) from one probe.
func (r *StorageLocationReconciler) probe(ctx context.Context, bsl *v1.BackupStorageLocation) (ctrl.Result, error) {
	gen := bsl.Generation
	bsl.Status.ObservedGeneration = gen
	store, reason, err := r.store(ctx, bsl)
	if err == nil {
		bsl.Status.URL = store.URL("")
		pctx, cancel := context.WithTimeout(ctx, r.ProbeTimeout)
		err = repository.Probe(pctx, store)
		cancel()
		now := metav1.Now()
		bsl.Status.LastProbeTime = &now
		reason = repository.ErrorReason(err)
		if reason == "" {
			reason = ReasonProbeFailed
		}
	}
	if err != nil {
		msg := err.Error()
		if reason == ReasonProbeFailed {
			msg = "The probe of the store failed: " + msg
		}
		conditions.MarkNotReady(&bsl.Status.Conditions, gen, reason, msg)
		return ctrl.Result{RequeueAfter: r.backoff(bsl)}, err
	}
	r.forget(bsl.Name)
	conditions.MarkReady(&bsl.Status.Conditions, gen, ReasonProbeSucceeded,
		fmt.Sprintf("Wrote, read back and deleted a probe object at %s", bsl.Status.URL))
	return ctrl.Result{RequeueAfter: probeInterval(bsl)}, nil
}

// store builds the store; a missing or incomplete credentials Secret is reported with
// its own reason.
func (r *StorageLocationReconciler) store(ctx context.Context, bsl *v1.BackupStorageLocation) (repository.Store, string, error) {
	return storeFor(ctx, r.Secrets, r.Namespace, bsl)
}

func storeFor(ctx context.Context, c client.Reader, namespace string, bsl *v1.BackupStorageLocation) (repository.Store, string, error) {
	var creds *corev1.Secret
	if bsl.Spec.S3 != nil {
		creds = &corev1.Secret{}
		name := bsl.Spec.S3.CredentialsSecretRef.Name
		if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, creds); err != nil {
			if apierrors.IsNotFound(err) {
				return repository.Store{}, ReasonCredentialsMissing, fmt.Errorf("The credentials Secret %s does not exist in namespace %s: create it with the keys %s and %s", name, namespace, repository.SecretAccessKeyID, repository.SecretSecretAccessKey)
			}
			return repository.Store{}, ReasonProbeFailed, err
		}
	}
	st, err := repository.StoreFromLocation(bsl, creds)
	if err != nil {
		return st, ReasonInvalidCredentials, err
	}
	return st, "", nil
}

func probeInterval(bsl *v1.BackupStorageLocation) time.Duration {
	if bsl.Spec.ProbeInterval != nil && bsl.Spec.ProbeInterval.Duration > 0 {
		return bsl.Spec.ProbeInterval.Duration
	}
	return 5 * time.Minute
}

func (r *StorageLocationReconciler) backoff(bsl *v1.BackupStorageLocation) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[string]int{}
	}
	n := r.failures[bsl.Name]
	r.failures[bsl.Name] = n + 1
	d := probeBackoffMin << min(n, 10)
	return min(d, probeBackoffMax, probeInterval(bsl))
}

func (r *StorageLocationReconciler) failureCount(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures[name]
}

func (r *StorageLocationReconciler) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.failures, name)
}

// event reports transitions only: a store becoming reachable or unreachable, or its
// failure changing (for example, from the bucket to the credentials).
func (r *StorageLocationReconciler) event(ctx context.Context, bsl *v1.BackupStorageLocation, wasReady bool, err error) {
	logger := log.FromContext(ctx)
	switch {
	case err == nil && !wasReady:
		logger.Info("storage location is ready", "url", bsl.Status.URL)
		r.Recorder.Event(bsl, corev1.EventTypeNormal, ReasonProbeSucceeded, "Storage location is ready: "+bsl.Status.URL)
	case err != nil:
		var cause string
		var re *repository.Error
		if errors.As(err, &re) {
			cause = re.Cause()
		}
		logger.Info("storage location probe failed", "reason", conditions.ReadyMessage(bsl.Status.Conditions), "cause", cause)
		if wasReady || r.failureCount(bsl.Name) <= 1 {
			r.Recorder.Event(bsl, corev1.EventTypeWarning, ReasonProbeFailed, err.Error())
		}
	}
}

// SetupWithManager watches locations and the credentials Secrets they name.
func (r *StorageLocationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.BackupStorageLocation{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Kind(r.SecretCache, &corev1.Secret{}, handler.TypedEnqueueRequestsFromMapFunc(r.locationsForSecret))).
		Named("backupstoragelocation").
		Complete(r)
}

func (r *StorageLocationReconciler) locationsForSecret(ctx context.Context, obj *corev1.Secret) []reconcile.Request {
	if obj.GetNamespace() != r.Namespace {
		return nil
	}
	var list v1.BackupStorageLocationList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, bsl := range list.Items {
		if bsl.Spec.S3 != nil && bsl.Spec.S3.CredentialsSecretRef.Name == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: bsl.Name}})
		}
	}
	return reqs
}
