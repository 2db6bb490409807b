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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/keyescrow"
	"github.com/holdfast-dev/holdfast/internal/metrics"
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
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch
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
	wasStalled := conditions.IsStalled(bsl.Status.Conditions)
	if r.checkRecipients(bsl) {
		if err := r.Status().Patch(ctx, bsl, client.MergeFrom(base)); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching the status of storage location %s: %w", bsl.Name, err)
		}
		if !wasStalled {
			r.Recorder.Event(bsl, corev1.EventTypeWarning, ReasonInvalidRecoveryRecipient, conditions.ReadyMessage(bsl.Status.Conditions))
		}
		return ctrl.Result{}, nil // the spec must change
	}
	result, probeErr := r.probe(ctx, bsl)
	if err := r.summarizeEscrow(ctx, bsl); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Status().Patch(ctx, bsl, client.MergeFrom(base)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil // deleted while it was probed
		}
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
		started := time.Now()
		err = repository.Probe(pctx, store)
		metrics.ProbeDurations.WithLabelValues(bsl.Name).Observe(time.Since(started).Seconds())
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
	msg := fmt.Sprintf("Wrote, read back and deleted a probe object at %s", bsl.Status.URL)
	if n := len(bsl.Spec.RecoveryRecipients); n > 0 {
		msg += fmt.Sprintf("; repository keys are escrowed in the store to %d recovery recipient(s)", n)
	} else {
		msg += "; no recovery recipients: repository keys exist only in this cluster's Secrets, so losing the cluster loses the data"
	}
	conditions.MarkReady(&bsl.Status.Conditions, gen, ReasonProbeSucceeded, msg)
	return ctrl.Result{RequeueAfter: probeInterval(bsl)}, nil
}

// Reasons of the KeysEscrowed condition (and of a Stalled location whose recipients
// are not age public keys).
const (
	ReasonInvalidRecoveryRecipient = "InvalidRecoveryRecipient"
	ReasonAllKeysEscrowed          = "AllKeysEscrowed"
	ReasonEscrowPending            = "EscrowPending"
)

// checkRecipients stalls the location when a recovery recipient is not an age public
// key (the CRD checks the form, not the checksum): its repositories then wait rather
// than create data whose key cannot be escrowed.
func (r *StorageLocationReconciler) checkRecipients(bsl *v1.BackupStorageLocation) bool {
	if _, err := keyescrow.ParseRecipients(bsl.Spec.RecoveryRecipients); err != nil {
		conditions.MarkStalled(&bsl.Status.Conditions, bsl.Generation, ReasonInvalidRecoveryRecipient, err.Error()+": copy it again from age-keygen's output")
		bsl.Status.ObservedGeneration = bsl.Generation
		return true
	}
	return false
}

// summarizeEscrow sets KeysEscrowed: True when every repository on the location has its
// key escrowed to the location's current recipients, False while some have not, or
// when the location names no recipients at all.
func (r *StorageLocationReconciler) summarizeEscrow(ctx context.Context, bsl *v1.BackupStorageLocation) error {
	set := func(status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&bsl.Status.Conditions, metav1.Condition{Type: v1.ConditionKeysEscrowed, Status: status,
			Reason: reason, Message: msg, ObservedGeneration: bsl.Generation})
	}
	if len(bsl.Spec.RecoveryRecipients) == 0 {
		set(metav1.ConditionFalse, ReasonNoRecoveryRecipients, "No recovery recipients: each repository key is only in a Secret of this cluster; if the cluster and its Secrets are lost, the backups in this location cannot be read by anyone")
		return nil
	}
	var list v1.BackupRepositoryList
	if err := r.List(ctx, &list); err != nil {
		return fmt.Errorf("listing the repositories of storage location %s: %w", bsl.Name, err)
	}
	digest := keyescrow.RecipientsDigest(bsl.Spec.RecoveryRecipients)
	var total, escrowed int
	for _, b := range list.Items {
		if b.Spec.StorageLocation != bsl.Name {
			continue
		}
		total++
		if b.Status.KeyEscrow != nil && b.Status.KeyEscrow.RecipientsDigest == digest {
			escrowed++
		}
	}
	n := len(bsl.Spec.RecoveryRecipients)
	if escrowed == total {
		set(metav1.ConditionTrue, ReasonAllKeysEscrowed, fmt.Sprintf("The keys of all %d repositories on this location are escrowed in the store, encrypted to its %d recovery recipient(s)", total, n))
		return nil
	}
	set(metav1.ConditionFalse, ReasonEscrowPending, fmt.Sprintf("%d of %d repositories on this location have their key escrowed to its %d recovery recipient(s); the others are escrowed when they are next reconciled (a repository that is not Ready says why)", escrowed, total, n))
	return nil
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
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(locationOfRepository), builder.WithPredicates(escrowChanged)).
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

// escrowChanged passes the repository changes that change a location's KeysEscrowed:
// an escrow written to other recipients, a repository gone.
var escrowChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1.BackupRepository), e.ObjectNew.(*v1.BackupRepository)
		digest := func(b *v1.BackupRepository) string {
			if b.Status.KeyEscrow == nil {
				return ""
			}
			return b.Status.KeyEscrow.RecipientsDigest
		}
		return digest(o) != digest(n)
	},
}

func locationOfRepository(_ context.Context, obj client.Object) []reconcile.Request {
	b, ok := obj.(*v1.BackupRepository)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: b.Spec.StorageLocation}}}
}
