package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodVolumeRestoreSpec is one snapshot to restore into one volume of one pod. Everything
// but cancel is fixed at creation: a change could point the restore at another
// namespace's data.
// +kubebuilder:validation:XValidation:rule="has(self.podVolumeBackup) == has(oldSelf.podVolumeBackup) && has(self.sourcePath) == has(oldSelf.sourcePath) && has(self.paths) == has(oldSelf.paths) && has(self.subPath) == has(oldSelf.subPath)",message="podVolumeBackup, sourcePath, paths and subPath are fixed at creation"
type PodVolumeRestoreSpec struct {
	// node is the node the pod is scheduled on; only that node's agent handles the
	// restore (a selectable field).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="node is immutable"
	Node string `json:"node"`

	// pod is the pod restored into.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="pod is immutable"
	Pod PodReference `json:"pod"`

	// volume is the name of the volume in pod.spec.volumes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="volume is immutable"
	Volume string `json:"volume"`

	// volumeRestore is the VolumeRestore this is part of; the agent writes the marker
	// .holdfast/<its uid> when done.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="volumeRestore is immutable"
	VolumeRestore string `json:"volumeRestore"`

	// snapshotID is the snapshot to restore.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="snapshotID is immutable"
	SnapshotID string `json:"snapshotID"`

	// podVolumeBackup is the backup the snapshot came from, when it is known.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="podVolumeBackup is immutable"
	PodVolumeBackup string `json:"podVolumeBackup,omitempty"`

	// sourceNamespace is the namespace whose repository holds the snapshot.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="sourceNamespace is immutable"
	SourceNamespace string `json:"sourceNamespace"`

	// sourcePath is the source identity the snapshot was taken of.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="sourcePath is immutable"
	SourcePath string `json:"sourcePath,omitempty"`

	// storageLocation is the BackupStorageLocation holding the repository.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storageLocation is immutable"
	StorageLocation string `json:"storageLocation"`

	// repository is the BackupRepository, in sourceNamespace, holding the snapshot.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="repository is immutable"
	Repository string `json:"repository"`

	// uploader is the program that made the snapshot and restores it.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="uploader is immutable"
	Uploader Uploader `json:"uploader"`

	// paths are the only files and directories of the snapshot to restore, relative to
	// its root; empty for the whole snapshot. A path the snapshot does not hold fails
	// the restore.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="paths is immutable"
	Paths []RestorePath `json:"paths,omitempty"`

	// subPath is the directory of the volume to restore into, made if missing and
	// confined to the volume; empty for the volume's root.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="subPath is immutable"
	SubPath RestorePath `json:"subPath,omitempty"`

	// cancel asks the agent to stop the restore; it ends Canceled.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// PodVolumeRestoreStatus is the progress and outcome of one volume's restore.
type PodVolumeRestoreStatus struct {
	// phase is where the restore is: Pending, InProgress, Completed, Failed, Canceled.
	// +optional
	Phase RunPhase `json:"phase,omitempty"`

	// conditions: Ready is True once the data is in place; Stalled when it failed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// message says, in one sentence, why the restore failed or was canceled.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// progress counts bytes and files restored and in total.
	// +optional
	Progress Progress `json:"progress,omitempty"`

	// notRestored counts, by why, what a Completed restore did not give back of the
	// snapshot; absent when it gave everything back.
	// +optional
	NotRestored *NotRestoredEntries `json:"notRestored,omitempty"`

	// startTime is when the agent started writing.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the restore ended, whatever the outcome.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// NotRestoredEntries counts what a restore did not give back, by why. A count is
// absent when it is zero.
type NotRestoredEntries struct {
	// fifos are named pipes the snapshot holds that the restore could not make: with
	// restic, those whose names are not valid UTF-8.
	// +optional
	// +kubebuilder:validation:Minimum=0
	FIFOs int64 `json:"fifos,omitempty"`

	// devices are device nodes the agent may not create on this node, or whose device
	// number the snapshot does not hold.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Devices int64 `json:"devices,omitempty"`

	// attributes are extended attributes (user.*, ACLs, capabilities) the volume's file
	// system refused, e.g. a share mounted without user_xattr.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attributes int64 `json:"attributes,omitempty"`

	// other are entries of kinds a restore does not make (sockets).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Other int64 `json:"other,omitempty"`
}

// PodVolumeRestore is one snapshot restored into one volume of one pod. The restore
// controller creates it once the pod is scheduled; the agent on spec.node does the work.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pvr,categories=holdfast
// +kubebuilder:selectablefield:JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.pod.name`
// +kubebuilder:printcolumn:name="Volume",type=string,JSONPath=`.spec.volume`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Bytes Done",type=integer,JSONPath=`.status.progress.bytesDone`
// +kubebuilder:printcolumn:name="Bytes Total",type=integer,JSONPath=`.status.progress.totalBytes`
// +kubebuilder:printcolumn:name="Snapshot",type=string,JSONPath=`.spec.snapshotID`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PodVolumeRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the snapshot and the volume to restore it into.
	// +required
	Spec PodVolumeRestoreSpec `json:"spec"`

	// status is the progress and outcome.
	// +optional
	Status PodVolumeRestoreStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PodVolumeRestoreList is a list of PodVolumeRestores.
type PodVolumeRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PodVolumeRestore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PodVolumeRestore{}, &PodVolumeRestoreList{})
}
