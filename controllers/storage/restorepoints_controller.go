package storage

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// restorePointsInterval is how often a repository's restore points are read again
// when no backup of it completes (another cluster, or the kopia or restic CLI, may
// write to the same store).
const restorePointsInterval = 10 * time.Minute

// maxRestorePointSources bounds status.restorePoints (the CRD allows 500).
const maxRestorePointSources = 500

// RestorePointsReconciler keeps status.restorePoints of each Ready BackupRepository:
// what the store holds, per source, read after each backup and on an interval. Sets no
// condition.
type RestorePointsReconciler struct {
	client.Client
	Catalog *Catalog
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories/status,verbs=get;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile reads the repository's snapshots and writes their summary.
func (r *RestorePointsReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, req.NamespacedName, brepo); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !brepo.DeletionTimestamp.IsZero() || !conditions.IsReady(brepo.Status.Conditions) {
		return ctrl.Result{}, nil
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: brepo.Namespace}, ns); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	snaps, err := r.Catalog.Snapshots(ctx, brepo)
	if err != nil {
		log.FromContext(ctx).Info("cannot read the restore points of the repository yet", "reason", err.Error())
		return ctrl.Result{RequeueAfter: storeRetry}, nil
	}
	points, omitted := SummarizeRestorePoints(snaps)
	now := metav1.Now()
	patch := client.MergeFrom(brepo.DeepCopy())
	brepo.Status.NamespaceUID = string(ns.UID)
	brepo.Status.RestorePoints = points
	brepo.Status.RestorePointsOmitted = omitted
	brepo.Status.RestorePointsTime = &now
	if err := r.Status().Patch(ctx, brepo, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("patching the restore points of BackupRepository %s: %w", req.NamespacedName, err)
	}
	return ctrl.Result{RequeueAfter: restorePointsInterval}, nil
}

// SummarizeRestorePoints groups snapshots by source identity and namespace
// incarnation, in a stable order, keeping the first maxRestorePointSources groups.
func SummarizeRestorePoints(snaps []repository.Snapshot) ([]v1.SourceRestorePoints, int32) {
	type key struct{ source, uid string }
	groups := map[key]*v1.SourceRestorePoints{}
	for _, s := range snaps {
		k := key{s.SourcePath, s.Tags[identity.TagNamespaceUID]}
		g, ok := groups[k]
		at := metav1.NewTime(s.StartTime.UTC().Truncate(time.Second))
		if !ok {
			g = &v1.SourceRestorePoints{SourcePath: k.source, NamespaceUID: k.uid, Oldest: at, Latest: at, LatestSnapshotID: s.ID}
			groups[k] = g
		}
		g.Snapshots++
		if s.StartTime.Before(g.Oldest.Time) {
			g.Oldest = at
		}
		// Snapshots come oldest first: a later one of the same second is newer.
		if !s.StartTime.Before(g.Latest.Time) {
			g.Latest, g.LatestSnapshotID = at, s.ID
		}
	}
	out := make([]v1.SourceRestorePoints, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SourcePath != out[j].SourcePath {
			return out[i].SourcePath < out[j].SourcePath
		}
		return out[i].NamespaceUID < out[j].NamespaceUID
	})
	if len(out) > maxRestorePointSources {
		return out[:maxRestorePointSources], int32(len(out) - maxRestorePointSources)
	}
	return out, 0
}

// SetupWithManager watches repositories and the backups that complete into them.
func (r *RestorePointsReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.BackupRepository{}).
		Watches(&v1.PodVolumeBackup{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			p, ok := o.(*v1.PodVolumeBackup)
			if !ok || p.Status.Phase != v1.RunCompleted {
				return nil
			}
			key := types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Repository}
			r.Catalog.Invalidate(key)
			return []reconcile.Request{{NamespacedName: key}}
		})).
		Named("restorepoints").
		Complete(r)
}
