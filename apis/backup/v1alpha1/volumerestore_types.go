package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VolumeRestoreSpec says which pods' volumes to restore and from which backups.
// +kubebuilder:validation:XValidation:rule="!has(self.source.podVolumeBackup) || (has(self.volumes) && self.volumes.size() == 1)",message="source.podVolumeBackup names the backup of one volume: list exactly that volume in spec.volumes"
type VolumeRestoreSpec struct {
	// podSelector picks the pods, in this namespace, to restore into: pods running now
	// get a data-only restore; pods created while the restore is pending wait in a
	// restore-wait init container until their data is back.
	// +required
	PodSelector metav1.LabelSelector `json:"podSelector"`

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
}

// RestoreVolume is one volume to restore, optionally from its own source.
type RestoreVolume struct {
	// name of the volume in pod.spec.volumes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// source overrides spec.source for this volume.
	// +optional
	Source *RestoreSource `json:"source,omitempty"`
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
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;PartiallyFailed;Failed
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
)

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

	// phase summarises the restore: Pending, InProgress, Completed, PartiallyFailed, Failed.
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
	// pod is the pod restored into.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod"`
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
	// phase of the volume's restore.
	// +optional
	Phase RunPhase `json:"phase,omitempty"`
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
