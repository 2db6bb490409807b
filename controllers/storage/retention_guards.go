package storage

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// What retention keeps besides what its rules keep: the snapshots that restores not
// yet finished read (pins), and the newest backup of each source that has files, so
// that a run of empty backups (a volume read while not mounted, or wiped) cannot
// rotate the last good one out.

// restorePin names a snapshot of a namespace's repositories.
type restorePin struct{ namespace, snapshotID string }

// Pins maps each snapshot that a PodVolumeRestore not yet finished reads to one such
// restore ("namespace/name"). Retention and the snapshot finalizer do not delete a
// pinned snapshot; a later pass does, once the restore has ended.
type Pins map[restorePin]string

// PinsOf collects the snapshots the restores that have not ended read.
func PinsOf(pvrs []v1.PodVolumeRestore) Pins {
	pins := Pins{}
	for i := range pvrs {
		p := &pvrs[i]
		if restoreEnded(p) || p.Spec.SnapshotID == "" {
			continue
		}
		pins[restorePin{p.Spec.SourceNamespace, p.Spec.SnapshotID}] = p.Namespace + "/" + p.Name
	}
	return pins
}

// restoreOf returns the restore that pins a snapshot, if any.
func (p Pins) restoreOf(namespace, snapshotID string) (string, bool) {
	if snapshotID == "" {
		return "", false
	}
	r, ok := p[restorePin{namespace, snapshotID}]
	return r, ok
}

// restoreEnded says whether a PodVolumeRestore will read its snapshot no more. One
// being deleted may still be running: it counts as not ended until it is gone.
func restoreEnded(p *v1.PodVolumeRestore) bool {
	switch p.Status.Phase {
	case v1.RunCompleted, v1.RunFailed, v1.RunCanceled:
		return true
	}
	return false
}

// BackupTime is when a backup was taken, by the API server's clock: its creation,
// which is its run's start. The agent's status.startTime comes from the node's clock;
// a node whose clock is ahead would make its backups look newest, and retention
// would then expire the genuinely newer ones. The restore planner orders "latest"
// and "before" with it too.
func BackupTime(p *v1.PodVolumeBackup) time.Time {
	return p.CreationTimestamp.Time
}

// Thresholds of FilesDropped: a backup with no files after one with any, or with
// under 1% of the files of one that had at least manyFiles.
const manyFiles = 1000

// fileCountCheck compares a Completed backup's file count with ref, the newest
// earlier Completed backup of the same source that has files (nil: none). It returns
// the FilesDropped condition to set.
func fileCountCheck(cur, ref *v1.PodVolumeBackup) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionFilesDropped, Status: metav1.ConditionFalse, Reason: v1.ReasonFileCountPlausible,
		ObservedGeneration: cur.Generation}
	files := cur.Status.Progress.TotalFiles
	if ref == nil {
		c.Message = fmt.Sprintf("%d files; no earlier backup of %s with files to compare with", files, cur.Spec.SourcePath)
		return c
	}
	before := ref.Status.Progress.TotalFiles
	switch {
	case files == 0 && before > 0:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonNoFiles
		c.Message = fmt.Sprintf("This backup holds no files, where backup %s of %s had %d: the volume may not have been mounted when it was read, or it was wiped; retention keeps %s and restoring latest does not pick this backup",
			ref.Name, cur.Spec.SourcePath, before, ref.Name)
	case before >= manyFiles && files*100 < before:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonFewFiles
		c.Message = fmt.Sprintf("This backup holds %d files, under 1%% of the %d of backup %s of %s: the volume may not have been mounted when it was read, or it was wiped; retention keeps %s and restoring latest does not pick this backup",
			files, before, ref.Name, cur.Spec.SourcePath, ref.Name)
	default:
		c.Message = fmt.Sprintf("%d files, %d in backup %s", files, before, ref.Name)
	}
	return c
}

// DroppedFiles says whether a backup was flagged FilesDropped (it suddenly holds no
// or very few files), with the condition's sentence. The restore planner skips such
// a backup for "latest" and "before" unless no other backup of the source is left,
// and says so in the restore's status.
func DroppedFiles(p *v1.PodVolumeBackup) (string, bool) {
	c := meta.FindStatusCondition(p.Status.Conditions, v1.ConditionFilesDropped)
	if c == nil || c.Status != metav1.ConditionTrue {
		return "", false
	}
	return c.Message, true
}

// hasGoodData says whether a Completed backup counts as a good copy of its source:
// it has files and was not flagged FilesDropped.
func hasGoodData(p *v1.PodVolumeBackup) bool {
	_, dropped := DroppedFiles(p)
	return p.Status.Progress.TotalFiles > 0 && !dropped
}

// checkFileCounts sets FilesDropped, once, on each Completed backup that has not been
// checked yet, comparing it with the newest earlier Completed backup of its source
// that has files; a drop is also a Warning event. pvbs are updated in place, so the
// retention pass that follows keeps the last good backup.
//
// It returns stale = true when the cache was behind a backup (a conflict): retention
// must not run before the check has, so the caller comes back shortly instead.
func (r *RetentionReconciler) checkFileCounts(ctx context.Context, pvbs []v1.PodVolumeBackup) (stale bool, err error) {
	type key struct{ ns, repo, source string }
	bySource := map[key][]*v1.PodVolumeBackup{}
	for i := range pvbs {
		p := &pvbs[i]
		if p.Status.Phase == v1.RunCompleted {
			k := key{p.Namespace, p.Spec.Repository, p.Spec.SourcePath}
			bySource[k] = append(bySource[k], p)
		}
	}
	for _, list := range bySource {
		sort.Slice(list, func(i, j int) bool {
			ti, tj := BackupTime(list[i]), BackupTime(list[j])
			if !ti.Equal(tj) {
				return ti.Before(tj)
			}
			return list[i].Name < list[j].Name
		})
		var ref *v1.PodVolumeBackup
		for _, p := range list {
			if p.DeletionTimestamp.IsZero() && meta.FindStatusCondition(p.Status.Conditions, v1.ConditionFilesDropped) == nil {
				c := fileCountCheck(p, ref)
				base := p.DeepCopy()
				meta.SetStatusCondition(&p.Status.Conditions, c)
				if err := r.Status().Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
					if apierrors.IsNotFound(err) {
						continue
					}
					if apierrors.IsConflict(err) {
						return true, nil
					}
					return false, fmt.Errorf("setting FilesDropped on PodVolumeBackup %s/%s: %w", p.Namespace, p.Name, err)
				}
				if c.Status == metav1.ConditionTrue {
					log.FromContext(ctx).Info("a backup suddenly holds no or very few files", "podVolumeBackup", client.ObjectKeyFromObject(p), "reason", c.Reason)
					r.Recorder.Event(p, corev1.EventTypeWarning, ReasonFilesDropped, c.Message)
				}
			}
			if p.Status.Progress.TotalFiles > 0 {
				ref = p
			}
		}
	}
	return false, nil
}
