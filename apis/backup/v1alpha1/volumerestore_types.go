package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VolumeRestoreSpec says which pods' volumes (or which claims) to restore and from
// which backups.
// +kubebuilder:validation:XValidation:rule="!has(self.source.podVolumeBackup) || (has(self.volumes) && self.volumes.size() == 1)",message="source.podVolumeBackup names the backup of one volume: list exactly that volume in spec.volumes"
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) != has(self.claimSelector)",message="set exactly one of spec.podSelector (restore into pods) and spec.claimSelector (restore into claims no pod uses)"
type VolumeRestoreSpec struct {
	// podSelector picks the pods, in this namespace, to restore into. Pods created
	// while the restore is pending wait in a restore-wait init container until their
	// data is back; what happens to selected pods that restore-wait does not hold is
	// spec.runningPods. Exactly one of podSelector and claimSelector is set.
	// +optional
	PodSelector metav1.LabelSelector `json:"podSelector,omitzero"`

	// claimSelector picks bound PersistentVolumeClaims, in this namespace, to restore
	// into, whether or not a pod uses them: each from the backups of its own claim
	// (source path /pvc/<claim>), and spec.volumes[].name names claims. The claims of a
	// StatefulSet carry its selector's matchLabels and its volumeClaimTemplates'
	// labels, so a StatefulSet's claims can be restored before it is scaled up. A claim
	// no running pod uses is written through a writer pod the manager starts (it
	// mounts only that claim and sleeps) and deletes when the claim is restored; a
	// claim a running pod uses is left as it is (reason ClaimInUse) unless
	// spec.runningPods is Overwrite, which restores through that pod. Exactly one of
	// podSelector and claimSelector is set.
	// +optional
	ClaimSelector *metav1.LabelSelector `json:"claimSelector,omitempty"`

	// runningPods says what the restore does to a selected pod that restore-wait does
	// not hold: one that ran before the restore was created, or one created without
	// the init container (the webhook was down or missed it). Skip (the default)
	// leaves it as it is and reports its volumes as skipped in status.volumes;
	// Overwrite restores into it while it runs (a data-only restore: the snapshot's
	// files are written over the live volume).
	// +optional
	// +kubebuilder:default=Skip
	RunningPods RunningPodsPolicy `json:"runningPods,omitempty"`

	// pendingDeadline is how long after its creation a restore that has restored
	// nothing yet may wait for pods and backups. Past it, a restore that started no
	// volume ends Expired: it never holds or restores a pod afterwards. A restore
	// that started goes on until its volumes are done. Default 1h; between 1m and
	// 720h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="pendingDeadline must be between 1m and 720h"
	PendingDeadline *metav1.Duration `json:"pendingDeadline,omitempty"`

	// volumes limits the restore to these volumes of each pod and can give each its
	// own source. Empty: every volume of the pod that has a backup.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Volumes []RestoreVolume `json:"volumes,omitempty"`

	// source is the backup to restore each volume from, unless the volume names its
	// own. Defaults to the latest completed backup of the volume's source identity.
	// +optional
	// +kubebuilder:default={latest: true}
	Source *RestoreSource `json:"source,omitempty"`

	// storageLocation restricts the search to backups on this BackupStorageLocation.
	// Empty: any location.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageLocation string `json:"storageLocation,omitempty"`

	// sourceNamespace restores the backups of another namespace into this one. That
	// namespace must grant it with the annotation
	// backup.holdfast.dev/restore-into: <this namespace>[,<other>...]; it is never
	// implicit. Empty: this namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	SourceNamespace string `json:"sourceNamespace,omitempty"`

	// paths restores only these files and directories of each snapshot, each relative
	// to the volume's root (as the pod sees the volume: "data/2026", "config.yaml");
	// a directory comes back with everything below it, at the same place. Nothing
	// else in the volume is touched: files outside these paths stay as they are. A
	// path that is not in the snapshot fails the volume's restore with a message that
	// names it. A volume's own spec.volumes[].paths replaces this list. Empty: the
	// whole snapshot.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Paths []RestorePath `json:"paths,omitempty"`

	// target redirects the restore to another place than the volume's root.
	// +optional
	Target *RestoreTarget `json:"target,omitempty"`
}

// RestorePath is a path inside a volume, relative to its root: no leading "/", and no
// empty, "." or ".." segment, so that it cannot name anything outside the volume.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=1024
// +kubebuilder:validation:XValidation:rule="!self.matches('(^|/)[.]{0,2}(/|$)')",message="must be a path relative to the volume's root: no leading /, no trailing /, and no empty, . or .. segment"
type RestorePath string

// RestoreTarget is where, in each selected volume, a restore writes.
type RestoreTarget struct {
	// subPath is a directory inside the volume to restore into instead of its root,
	// made if it is missing: the snapshot's root becomes this directory (with
	// spec.paths, each path is restored below it). Everything is written beneath it:
	// a symbolic link at subPath or in its parents that leads out of the volume fails
	// the restore and nothing is written. Use it to restore beside the live data and
	// compare or copy back by hand, as with a restic restore --target.
	// +required
	SubPath RestorePath `json:"subPath"`
}

// PathsOf is what a restore restores of the volume named volume: that volume's own
// spec.volumes[].paths if it has them, else spec.paths; nil means the whole snapshot.
func (vr *VolumeRestore) PathsOf(volume string) []RestorePath {
	for _, v := range vr.Spec.Volumes {
		if v.Name == volume && len(v.Paths) > 0 {
			return v.Paths
		}
	}
	return vr.Spec.Paths
}

// FromOf is the source path volume (a pod volume, or a claim under claimSelector) is
// restored from when its spec.volumes[].from names another source identity; empty
// for its own.
func (vr *VolumeRestore) FromOf(volume string) string {
	for _, v := range vr.Spec.Volumes {
		if v.Name != volume || v.From == "" {
			continue
		}
		if v.From[0] == '/' {
			return v.From
		}
		return "/pvc/" + v.From
	}
	return ""
}

// SubPathOf is the directory inside each volume that the restore writes into, empty
// for the volume's root.
func (vr *VolumeRestore) SubPathOf() RestorePath {
	if vr.Spec.Target == nil {
		return ""
	}
	return vr.Spec.Target.SubPath
}

// RunningPodsPolicy is what a restore does to the pods it selects that restore-wait
// does not hold.
// +kubebuilder:validation:Enum=Skip;Overwrite
type RunningPodsPolicy string

const (
	// RunningPodsSkip never writes into a pod that restore-wait does not hold.
	RunningPodsSkip RunningPodsPolicy = "Skip"
	// RunningPodsOverwrite restores into such pods while they run.
	RunningPodsOverwrite RunningPodsPolicy = "Overwrite"
)

// DefaultPendingDeadline is spec.pendingDeadline when it is not set.
const DefaultPendingDeadline = time.Hour

// PendingDeadlineOf is when a restore that restored nothing yet expires.
func (vr *VolumeRestore) PendingDeadlineOf() time.Time {
	d := DefaultPendingDeadline
	if vr.Spec.PendingDeadline != nil && vr.Spec.PendingDeadline.Duration > 0 {
		d = vr.Spec.PendingDeadline.Duration
	}
	return vr.CreationTimestamp.Add(d)
}

// OverwritesRunningPods says whether the restore writes into pods that restore-wait
// does not hold.
func (vr *VolumeRestore) OverwritesRunningPods() bool {
	return vr.Spec.RunningPods == RunningPodsOverwrite
}

// RestoreVolume is one volume to restore, optionally from its own source.
type RestoreVolume struct {
	// name of the volume in pod.spec.volumes; with spec.claimSelector, the name of a
	// claim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// source overrides spec.source for this volume.
	// +optional
	Source *RestoreSource `json:"source,omitempty"`

	// from restores this volume from the backups of another source identity of the
	// source namespace instead of its own: a source path as the backups' spec.sourcePath
	// says it ("/pvc/<claim>", "/deployment/<name>/<volume>", "/pod/<pod>/<volume>"),
	// or the name of a claim, which stands for /pvc/<claim>. Use it to restore one
	// claim's data into another claim or pod (VolSync's "restore into a new PVC",
	// Velero's volume mapping); spec.source picks which of those backups. Another
	// namespace's backups still need spec.sourceNamespace and its grant.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/') ? !self.matches('/[.]{0,2}(/|$)') : self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="from must be a source path (/pvc/<claim>, /<kind>/<name>/<volume>) without empty, . or .. segments, or a claim name"
	From string `json:"from,omitempty"`

	// paths overrides spec.paths for this volume: only these files and directories of
	// its snapshot are restored.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Paths []RestorePath `json:"paths,omitempty"`
}

// RestoreSource picks one backup of a volume: the latest, the latest at or before a
// time, or a named PodVolumeBackup. Exactly one must be set.
// +kubebuilder:validation:XValidation:rule="(has(self.latest) && self.latest ? 1 : 0) + (has(self.before) ? 1 : 0) + (has(self.podVolumeBackup) ? 1 : 0) == 1",message="source must set exactly one of latest: true, before or podVolumeBackup"
type RestoreSource struct {
	// latest restores the newest completed backup of the volume's source identity.
	// +optional
	Latest bool `json:"latest,omitempty"`

	// before restores the newest completed backup that started at or before this time
	// (RFC 3339).
	// +optional
	Before *metav1.Time `json:"before,omitempty"`

	// podVolumeBackup restores the snapshot of this PodVolumeBackup.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PodVolumeBackup string `json:"podVolumeBackup,omitempty"`
}

// RestorePhase is how far a VolumeRestore has come.
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;PartiallyFailed;Failed;Expired
type RestorePhase string

const (
	// RestorePending: no matching pod is scheduled yet; new matching pods will wait.
	RestorePending RestorePhase = "Pending"
	// RestoreInProgress: volumes are being restored.
	RestoreInProgress RestorePhase = "InProgress"
	// RestoreCompleted: every volume was restored.
	RestoreCompleted RestorePhase = "Completed"
	// RestorePartiallyFailed: some volumes were restored, some failed.
	RestorePartiallyFailed RestorePhase = "PartiallyFailed"
	// RestoreFailed: no volume could be restored.
	RestoreFailed RestorePhase = "Failed"
	// RestoreExpired: spec.pendingDeadline passed before any volume was restored;
	// the restore holds and restores nothing any more.
	RestoreExpired RestorePhase = "Expired"
)

// IsFinal says whether a restore in phase p has ended: it holds no new pod and
// restores nothing more.
func (p RestorePhase) IsFinal() bool {
	return p == RestoreCompleted || p == RestoreFailed || p == RestorePartiallyFailed || p == RestoreExpired
}

// VolumeRestoreStatus reports each volume's restore and the whole.
type VolumeRestoreStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (every volume restored), Reconciling, Stalled (for example a
	// named backup that does not exist, or a missing namespace grant).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// phase summarises the restore: Pending, InProgress, Completed, PartiallyFailed,
	// Failed, Expired.
	// +optional
	Phase RestorePhase `json:"phase,omitempty"`

	// volumesTotal is the number of volumes to restore.
	// +optional
	VolumesTotal int32 `json:"volumesTotal"`
	// volumesCompleted is the number of volumes restored.
	// +optional
	VolumesCompleted int32 `json:"volumesCompleted"`
	// volumesFailed is the number of volumes whose restore failed.
	// +optional
	VolumesFailed int32 `json:"volumesFailed"`
	// volumesSkipped is the number of volumes of selected pods that were left as they
	// are because restore-wait does not hold their pod (spec.runningPods: Skip).
	// +optional
	VolumesSkipped int32 `json:"volumesSkipped,omitempty"`

	// volumes is the outcome per (pod, volume).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Volumes []RestoreVolumeStatus `json:"volumes,omitempty"`

	// startTime is when the first volume restore was created.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// completionTime is when the last volume restore ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// RestoreVolumeStatus is the outcome of restoring one volume of one pod.
type RestoreVolumeStatus struct {
	// pod is the pod restored into: under spec.claimSelector, the claim's writer pod
	// (or the running pod that uses it), empty while there is none.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod,omitempty"`
	// claim is the PersistentVolumeClaim restored, under spec.claimSelector.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Claim string `json:"claim,omitempty"`
	// volume is the volume restored.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Volume string `json:"volume"`
	// podVolumeRestore is the per-volume object doing the work.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PodVolumeRestore string `json:"podVolumeRestore,omitempty"`
	// snapshotID is the snapshot being restored.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SnapshotID string `json:"snapshotID,omitempty"`
	// paths are the files and directories of the snapshot restored; absent when the
	// whole snapshot is.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	Paths []string `json:"paths,omitempty"`
	// subPath is the directory of the volume restored into; absent for its root.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	SubPath string `json:"subPath,omitempty"`
	// phase of the volume's restore; empty for a volume that is skipped.
	// +optional
	Phase RunPhase `json:"phase,omitempty"`
	// reason is why a volume is not restored, in one word: PodNotHeld when restore-wait
	// does not hold its pod and spec.runningPods is Skip; ClaimInUse when, under
	// spec.claimSelector, a running pod uses the claim and spec.runningPods is Skip.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
	// message says why it failed, in one sentence.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// VolumeRestore restores pod volumes from their backups, into running pods or into
// pods that are created while it is pending.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vr,categories=holdfast
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Done",type=integer,JSONPath=`.status.volumesCompleted`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.volumesTotal`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.volumesFailed`
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.volumesSkipped`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VolumeRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which pods' volumes to restore and from which backups.
	// +required
	Spec VolumeRestoreSpec `json:"spec"`

	// status reports each volume's restore and the whole.
	// +optional
	Status VolumeRestoreStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// VolumeRestoreList is a list of VolumeRestores.
type VolumeRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VolumeRestore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VolumeRestore{}, &VolumeRestoreList{})
}
