package restore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// volumePlan is one volume of one pod and the backup it is restored from.
type volumePlan struct {
	Volume     string
	SourcePath string
	Backup     *v1.PodVolumeBackup
}

// podPlan is what a restore does to one pod.
type podPlan struct {
	Volumes []volumePlan
	// Missing are the volumes the restore names but cannot restore; they make the
	// restore fail for those volumes.
	Missing []missingVolume
	// NoBackup lists volumes of the pod that could be restored but have no backup;
	// with no volumes named in the restore they are left as they are.
	NoBackup []string
}

// missingVolume is a volume that cannot be restored, with the sentence that says why.
type missingVolume struct {
	Volume  string
	Message string
}

// planner decides, for a restore and a pod, which volume gets which backup. The
// reconciler and the pod webhook share it, so the init container waits for exactly
// the volumes that get a PodVolumeRestore.
type planner struct {
	client client.Reader
}

// sourceNamespace is the namespace whose backups a restore reads.
func sourceNamespace(vr *v1.VolumeRestore) string {
	if vr.Spec.SourceNamespace != "" {
		return vr.Spec.SourceNamespace
	}
	return vr.Namespace
}

// plan resolves the volumes of pod for vr. backups are the PodVolumeBackups of the
// source namespace (listed once by the caller for all pods).
func (p *planner) plan(ctx context.Context, vr *v1.VolumeRestore, pod *corev1.Pod, backups []v1.PodVolumeBackup) (podPlan, error) {
	var out podPlan
	named := map[string]*v1.RestoreSource{}
	for i := range vr.Spec.Volumes {
		named[vr.Spec.Volumes[i].Name] = vr.Spec.Volumes[i].Source
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		src, isNamed := named[vol.Name]
		if len(named) > 0 && !isNamed {
			continue
		}
		delete(named, vol.Name)
		if !restorable(vol) {
			if isNamed {
				out.Missing = append(out.Missing, missingVolume{vol.Name,
					fmt.Sprintf("volume %s of pod %s is a %s volume, which Holdfast does not restore", vol.Name, pod.Name, kindOf(vol))})
			}
			continue
		}
		if src == nil {
			src = vr.Spec.Source
		}
		if src == nil {
			// The API server defaults it; an object from elsewhere may lack it.
			src = &v1.RestoreSource{Latest: true}
		}
		path := identity.SourcePath(pod, vol, p.replicaSetOwner(ctx))
		backup, why, err := p.choose(ctx, vr, src, path, backups)
		if err != nil {
			return podPlan{}, err
		}
		switch {
		case backup != nil:
			out.Volumes = append(out.Volumes, volumePlan{Volume: vol.Name, SourcePath: path, Backup: backup})
		case isNamed || len(vr.Spec.Volumes) > 0:
			out.Missing = append(out.Missing, missingVolume{vol.Name, fmt.Sprintf("volume %s of pod %s: %s", vol.Name, pod.Name, why)})
		default:
			out.NoBackup = append(out.NoBackup, vol.Name)
		}
	}
	for name := range named {
		out.Missing = append(out.Missing, missingVolume{name, fmt.Sprintf("pod %s has no volume %s", pod.Name, name)})
	}
	slices.SortFunc(out.Missing, func(a, b missingVolume) int { return strings.Compare(a.Volume, b.Volume) })
	return out, nil
}

// choose picks the backup of one volume. It returns nil and a sentence when there is
// none; an error only when the API cannot be read.
func (p *planner) choose(ctx context.Context, vr *v1.VolumeRestore, src *v1.RestoreSource, path string, backups []v1.PodVolumeBackup) (*v1.PodVolumeBackup, string, error) {
	ns := sourceNamespace(vr)
	if src.PodVolumeBackup != "" {
		for i := range backups {
			if b := &backups[i]; b.Name == src.PodVolumeBackup {
				if b.Status.Phase != v1.RunCompleted || b.Status.SnapshotID == "" {
					return nil, fmt.Sprintf("PodVolumeBackup %s/%s is %s, not Completed", ns, b.Name, phaseOf(b)), nil
				}
				return b, "", nil
			}
		}
		return nil, fmt.Sprintf("PodVolumeBackup %s/%s does not exist", ns, src.PodVolumeBackup), nil
	}
	var best *v1.PodVolumeBackup
	for i := range backups {
		b := &backups[i]
		if b.Spec.SourcePath != path || b.Status.Phase != v1.RunCompleted || b.Status.SnapshotID == "" {
			continue
		}
		if vr.Spec.StorageLocation != "" && b.Spec.StorageLocation != vr.Spec.StorageLocation {
			continue
		}
		at := backupTime(b)
		if src.Before != nil && at.After(src.Before.Time) {
			continue
		}
		if best == nil || newer(b, best) {
			best = b
		}
	}
	if best != nil {
		return best, "", nil
	}
	where := "in namespace " + ns
	if vr.Spec.StorageLocation != "" {
		where += " on storage location " + vr.Spec.StorageLocation
	}
	if src.Before != nil {
		return nil, fmt.Sprintf("no completed backup of %s %s at or before %s", path, where, src.Before.UTC().Format("2006-01-02T15:04:05Z")), nil
	}
	return nil, fmt.Sprintf("no completed backup of %s %s", path, where), nil
}

// newer reports whether backup a of a volume holds later data than b. Times in status
// have whole seconds, so two runs in the same second (run-now twice, as make test's
// stories do) tie; then a backup whose parent is the other's snapshot is the newer, and
// after that the later created, and the later name (run names carry their start time).
func newer(a, b *v1.PodVolumeBackup) bool {
	ta, tb := backupTime(a), backupTime(b)
	if !ta.Equal(&tb) {
		return ta.After(tb.Time)
	}
	switch {
	case a.Status.ParentSnapshotID != "" && a.Status.ParentSnapshotID == b.Status.SnapshotID:
		return true
	case b.Status.ParentSnapshotID != "" && b.Status.ParentSnapshotID == a.Status.SnapshotID:
		return false
	case !a.CreationTimestamp.Equal(&b.CreationTimestamp):
		return a.CreationTimestamp.After(b.CreationTimestamp.Time)
	}
	return a.Name > b.Name
}

// backupTime is when a backup's data was read: its start, else its creation.
func backupTime(b *v1.PodVolumeBackup) metav1.Time {
	if b.Status.StartTime != nil {
		return *b.Status.StartTime
	}
	return b.CreationTimestamp
}

func phaseOf(b *v1.PodVolumeBackup) string {
	if b.Status.Phase == "" {
		return string(v1.RunPending)
	}
	return string(b.Status.Phase)
}

// replicaSetOwner answers the owner of a ReplicaSet from the cache, so a Deployment
// pod's source path is /deployment/<name>/<volume>, as at backup time.
func (p *planner) replicaSetOwner(ctx context.Context) identity.OwnerOfReplicaSet {
	return func(namespace, name string) *metav1.OwnerReference {
		rs := &appsv1.ReplicaSet{}
		if err := p.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, rs); err != nil {
			return nil
		}
		return metav1.GetControllerOf(rs)
	}
}

// restorable says whether Holdfast can restore a volume of this kind at all.
func restorable(vol *corev1.Volume) bool {
	s := vol.VolumeSource
	return s.HostPath == nil && s.Secret == nil && s.ConfigMap == nil && s.Projected == nil && s.DownwardAPI == nil
}

func kindOf(vol *corev1.Volume) string {
	s := vol.VolumeSource
	switch {
	case s.HostPath != nil:
		return "hostPath"
	case s.Secret != nil:
		return "secret"
	case s.ConfigMap != nil:
		return "configMap"
	case s.Projected != nil:
		return "projected"
	case s.DownwardAPI != nil:
		return "downwardAPI"
	}
	return "other"
}

// granted says whether the source namespace lets ns restore its backups.
func granted(source *corev1.Namespace, ns string) bool {
	for _, n := range strings.Split(source.Annotations[v1.AnnotationRestoreInto], ",") {
		if strings.TrimSpace(n) == ns {
			return true
		}
	}
	return false
}
