package storage

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// DefaultFinishedTTL is how long Failed and Canceled PodVolumeBackups and ended
// PodVolumeRestores stay before they are deleted (the newest failed backup of each
// source stays until a newer backup of the source fails or ends).
const DefaultFinishedTTL = 72 * time.Hour

// finishedAt is when a run object ended: its completionTime (the agent's clock; a
// skew of minutes does not matter against a TTL of days), unless that is missing or
// ahead of the API server, then its creation.
func finishedAt(created metav1.Time, completion *metav1.Time, now time.Time) time.Time {
	if completion != nil && !completion.After(now) {
		return completion.Time
	}
	return created.Time
}

// failedToCollect returns the Failed and Canceled backups older than ttl, except the
// newest failed or canceled one of each source, and how long until the next one is
// due (0: none). It is pure.
func failedToCollect(pvbs []v1.PodVolumeBackup, ttl time.Duration, now time.Time) ([]*v1.PodVolumeBackup, time.Duration) {
	type key struct{ ns, repo, source string }
	newest := map[key]*v1.PodVolumeBackup{}
	var failed []*v1.PodVolumeBackup
	for i := range pvbs {
		p := &pvbs[i]
		if (p.Status.Phase != v1.RunFailed && p.Status.Phase != v1.RunCanceled) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		failed = append(failed, p)
		k := key{p.Namespace, p.Spec.Repository, p.Spec.SourcePath}
		if n := newest[k]; n == nil || BackupTime(p).After(BackupTime(n)) || (BackupTime(p).Equal(BackupTime(n)) && p.Name > n.Name) {
			newest[k] = p
		}
	}
	var out []*v1.PodVolumeBackup
	var next time.Duration
	for _, p := range failed {
		if newest[key{p.Namespace, p.Spec.Repository, p.Spec.SourcePath}] == p {
			continue
		}
		due := finishedAt(p.CreationTimestamp, p.Status.CompletionTime, now).Add(ttl)
		if !due.After(now) {
			out = append(out, p)
		} else if wait := due.Sub(now); next == 0 || wait < next {
			next = wait
		}
	}
	return out, next
}

// collectFailed deletes the Failed and Canceled backups of a policy that are older
// than FinishedTTL, keeping the newest of each source so that describe still shows
// its last failure. A snapshot such a backup left (restic's "some files could not be
// read", a lost final status write) has no PodVolumeBackup that records it: retention
// counts it as an orphan snapshot of its source. It returns when to come back.
func (r *RetentionReconciler) collectFailed(ctx context.Context, pvbs []v1.PodVolumeBackup) (time.Duration, error) {
	ttl := r.FinishedTTL
	if ttl <= 0 {
		ttl = DefaultFinishedTTL
	}
	due, next := failedToCollect(pvbs, ttl, time.Now())
	for _, p := range due {
		log.FromContext(ctx).Info("deleting an old failed backup", "podVolumeBackup", client.ObjectKeyFromObject(p), "phase", p.Status.Phase)
		r.Recorder.Event(p, corev1.EventTypeNormal, ReasonCollected, fmt.Sprintf("Deleted: %s more than %s ago, and a newer backup of %s failed too", p.Status.Phase, ttl, p.Spec.SourcePath))
		if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("deleting PodVolumeBackup %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return next, nil
}

// FinishedRestoreCollector deletes PodVolumeRestores that ended more than TTL ago,
// once their VolumeRestore has ended too (or is gone): an ended VolumeRestore keeps
// its per-volume summary in its own status.
type FinishedRestoreCollector struct {
	client.Client
	Recorder record.EventRecorder
	TTL      time.Duration
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores,verbs=get;list;watch

// Reconcile deletes one ended PodVolumeRestore when it is due, or comes back then.
func (r *FinishedRestoreCollector) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvr := &v1.PodVolumeRestore{}
	if err := r.Get(ctx, req.NamespacedName, pvr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !restoreEnded(pvr) || !pvr.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = DefaultFinishedTTL
	}
	now := time.Now()
	if wait := finishedAt(pvr.CreationTimestamp, pvr.Status.CompletionTime, now).Add(ttl).Sub(now); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	// The owner reference holds the VolumeRestore's whole name; its label may be shortened.
	if owner := metav1.GetControllerOf(pvr); owner != nil && owner.Kind == "VolumeRestore" {
		name := owner.Name
		vr := &v1.VolumeRestore{}
		err := r.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: name}, vr)
		if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		if err == nil && (vr.Status.Phase == "" || vr.Status.Phase == v1.RestorePending || vr.Status.Phase == v1.RestoreInProgress) {
			// Its VolumeRestore still counts it: look again later.
			return ctrl.Result{RequeueAfter: ttl}, nil
		}
	}
	log.FromContext(ctx).Info("deleting an ended restore", "podVolumeRestore", req.NamespacedName, "phase", pvr.Status.Phase)
	r.Recorder.Event(pvr, corev1.EventTypeNormal, ReasonCollected, fmt.Sprintf("Deleted: %s more than %s ago", pvr.Status.Phase, ttl))
	return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, pvr, client.Preconditions{UID: &pvr.UID}))
}

// SetupWithManager watches PodVolumeRestores.
func (r *FinishedRestoreCollector) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.PodVolumeRestore{}).
		Named("finishedrestores").
		Complete(r)
}
