package policy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// sourceIndex indexes PodVolumeBackups by <namespace>/<repository>/<sourcePath>: the
// backups that form one incremental chain.
const sourceIndex = "holdfast.source"

func sourceKey(namespace, repository, sourcePath string) string {
	return namespace + "/" + repository + "/" + sourcePath
}

func indexBySource(o client.Object) []string {
	p, ok := o.(*v1.PodVolumeBackup)
	if !ok {
		return nil
	}
	return []string{sourceKey(p.Namespace, p.Spec.Repository, p.Spec.SourcePath)}
}

// parentFor chooses what a new backup of a source is incremental to: the newest
// completed backup of the source in this namespace (PodVolumeBackups go with their
// namespace, so these are always its own), else the newest snapshot the store holds
// of the source in a namespace incarnation this one adopts (a namespace created again,
// or a new cluster, whose administrator said so; the repository's status lists them).
// A namespace that adopts nothing starts a new chain: it neither continues nor learns
// the snapshot IDs of the namespace that had its name before (review M14).
func (r *VolumeBackupPolicyReconciler) parentFor(ctx context.Context, ns *corev1.Namespace, repo, sourcePath string) (string, error) {
	var pvbs v1.PodVolumeBackupList
	if err := r.List(ctx, &pvbs, client.InNamespace(ns.Name), client.MatchingFields{sourceIndex: sourceKey(ns.Name, repo, sourcePath)},
		client.UnsafeDisableDeepCopy); err != nil { // read only
		return "", fmt.Errorf("listing the backups of %s in namespace %s: %w", sourcePath, ns.Name, err)
	}
	var newest *v1.PodVolumeBackup
	for i := range pvbs.Items {
		p := &pvbs.Items[i]
		if p.Status.Phase != v1.RunCompleted || p.Status.SnapshotID == "" {
			continue
		}
		if newest == nil || backupStart(p).After(backupStart(newest)) {
			newest = p
		}
	}
	if newest != nil {
		return newest.Status.SnapshotID, nil
	}
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: repo}, brepo); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("reading BackupRepository %s/%s: %w", ns.Name, repo, err)
	}
	var parent *v1.SourceRestorePoints
	for i := range brepo.Status.RestorePoints {
		rp := &brepo.Status.RestorePoints[i]
		if rp.SourcePath != sourcePath || !identity.Adopts(ns, rp.NamespaceUID) {
			continue
		}
		if parent == nil || rp.Latest.After(parent.Latest.Time) {
			parent = rp
		}
	}
	if parent == nil {
		return "", nil
	}
	return parent.LatestSnapshotID, nil
}

func backupStart(p *v1.PodVolumeBackup) time.Time {
	if p.Status.StartTime != nil {
		return p.Status.StartTime.Time
	}
	return p.CreationTimestamp.Time
}
