package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupRepositorySpec names the store and the uploader of one repository. The policy
// controller creates one per (namespace, storage location, uploader).
type BackupRepositorySpec struct {
	// storageLocation is the name of the BackupStorageLocation holding the repository.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storageLocation is immutable"
	StorageLocation string `json:"storageLocation"`

	// uploader is the repository format: kopia or restic.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="uploader is immutable"
	Uploader Uploader `json:"uploader"`

	// maintenanceInterval is how often maintenance runs (kopia quick maintenance,
	// restic prune); kopia full maintenance runs every 24 hours. At least 5m: a pass
	// holds one of the manager's few maintenance slots (and restic's exclusive lock).
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5m')",message="maintenanceInterval must be at least 5m"
	MaintenanceInterval *metav1.Duration `json:"maintenanceInterval,omitempty"`
}

// BackupRepositoryStatus tells whether the repository can be used and how its
// maintenance went.
type BackupRepositoryStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (initialised or connected with its key), Reconciling, Stalled
	// (for example: the data in the store was not written with this key).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// url is where the repository lives (s3://bucket/prefix/kopia/<namespace>/).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url,omitempty"`

	// keySecretName is the Secret in the operator namespace holding this repository's
	// own encryption key. No two repositories share a key.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	KeySecretName string `json:"keySecretName,omitempty"`

	// keyEscrow says where the key is escrowed in the store, encrypted to the recovery
	// recipients of the storage location; absent when it names none (condition
	// KeyEscrowed says so).
	// +optional
	KeyEscrow *KeyEscrowStatus `json:"keyEscrow,omitempty"`

	// lastMaintenanceTime is when the last maintenance finished.
	// +optional
	LastMaintenanceTime *metav1.Time `json:"lastMaintenanceTime,omitempty"`

	// maintenance lists the last few maintenance results, newest first.
	// +optional
	// +kubebuilder:validation:MaxItems=5
	Maintenance []MaintenanceResult `json:"maintenance,omitempty"`

	// storeUsage is what the repository occupies in the store, measured by listing
	// its objects after each maintenance pass that ran (hourly by default), so
	// backups since then are not in it yet. Absent before the first measurement.
	// +optional
	StoreUsage *StoreUsage `json:"storeUsage,omitempty"`

	// namespaceUID is the UID of the namespace the repository belongs to now. Snapshots
	// carry the UID of the namespace they were taken in; those of an earlier namespace
	// of the same name are restored, and continued, only where the namespace adopts
	// them (annotation backup.holdfast.dev/adopt-backups).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	NamespaceUID string `json:"namespaceUID,omitempty"`

	// restorePoints are the restore points the store holds, one entry per source
	// identity and namespace incarnation, read from the repository's snapshot list
	// (not from PodVolumeBackups, which go with their namespace): after each backup
	// and on an interval.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=500
	RestorePoints []SourceRestorePoints `json:"restorePoints,omitempty"`

	// restorePointsOmitted counts the sources left out of restorePoints beyond 500.
	// +optional
	RestorePointsOmitted int32 `json:"restorePointsOmitted,omitempty"`

	// restorePointsTime is when restorePoints was read from the store.
	// +optional
	RestorePointsTime *metav1.Time `json:"restorePointsTime,omitempty"`
}

// SourceRestorePoints summarizes the snapshots of one source identity.
type SourceRestorePoints struct {
	// sourcePath is the source identity (/pvc/<claim>, /deployment/<name>/<volume>, ...).
	// +required
	// +kubebuilder:validation:MaxLength=1024
	SourcePath string `json:"sourcePath"`
	// namespaceUID is the namespace the snapshots were taken in; empty for snapshots
	// written before Holdfast recorded it.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	NamespaceUID string `json:"namespaceUID,omitempty"`
	// snapshots is how many there are.
	// +required
	Snapshots int32 `json:"snapshots"`
	// oldest and latest are when the first and the last were taken.
	// +required
	Oldest metav1.Time `json:"oldest"`
	// +required
	Latest metav1.Time `json:"latest"`
	// latestSnapshotID is the newest snapshot.
	// +required
	// +kubebuilder:validation:MaxLength=128
	LatestSnapshotID string `json:"latestSnapshotID"`
}

// MaintenanceResult is one maintenance pass over a repository.
type MaintenanceResult struct {
	// mode of the pass: Quick or Full (kopia), Prune (restic).
	// +required
	// +kubebuilder:validation:Enum=Quick;Full;Prune
	Mode string `json:"mode"`
	// result of the pass: Deferred when another restic process (a long backup or
	// restore) held the repository's lock; it is tried again within minutes.
	// +required
	// +kubebuilder:validation:Enum=Succeeded;Failed;Deferred
	Result string `json:"result"`
	// startTime is when the pass started.
	// +required
	StartTime metav1.Time `json:"startTime"`
	// completionTime is when the pass ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// message says what failed, or what was reclaimed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// StoreUsage is the size of a repository's objects in its store: its data after
// deduplication, compression and encryption, with indexes, snapshot manifests, locks
// and logs (the escrowed key is an object beside it, not counted).
type StoreUsage struct {
	// bytes is the total size of the objects.
	// +required
	// +kubebuilder:validation:Minimum=0
	Bytes int64 `json:"bytes"`
	// objects is how many objects (files, on a filesystem store) there are.
	// +required
	// +kubebuilder:validation:Minimum=0
	Objects int64 `json:"objects"`
	// measuredTime is when the store was listed.
	// +required
	MeasuredTime metav1.Time `json:"measuredTime"`
}

// BackupRepository is one kopia or restic repository: the backups of one namespace on
// one storage location, encrypted with a key of its own. Controllers create it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=brepo,categories=holdfast
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.spec.storageLocation`
// +kubebuilder:printcolumn:name="Uploader",type=string,JSONPath=`.spec.uploader`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Last Maintenance",type=date,JSONPath=`.status.lastMaintenanceTime`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`,priority=1
// +kubebuilder:printcolumn:name="Key Escrowed",type=string,JSONPath=`.status.conditions[?(@.type=="KeyEscrowed")].status`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BackupRepository struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the store and the uploader.
	// +required
	Spec BackupRepositorySpec `json:"spec"`

	// status tells whether the repository can be used.
	// +optional
	Status BackupRepositoryStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BackupRepositoryList is a list of BackupRepositories.
type BackupRepositoryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackupRepository `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BackupRepository{}, &BackupRepositoryList{})
}
