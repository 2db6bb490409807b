package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BrowseSessionSpec says whose restore points to list and which one to open.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a browse session is fixed at creation: create another one"
type BrowseSessionSpec struct {
	// source is the volume whose restore points to list: a claim's name (its source
	// path is /pvc/<claim>) or a source path as BackupRepository status.restorePoints
	// lists it (starting with "/", for example /replicaset/web/cache). Only this
	// namespace's backups are read, and those of an earlier namespace of the same name
	// only when this one adopts them (backup.holdfast.dev/adopt-backups).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Source string `json:"source"`

	// snapshotID opens one restore point of the source for reading: a relay pod the
	// manager starts in this namespace serves its files (list a directory, download a
	// file or a directory) on its loopback address, reached with kubectl port-forward.
	// Empty: the session only lists the restore points.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SnapshotID string `json:"snapshotID,omitempty"`

	// ttl is how long the session lives: past it the relay pod is deleted and the
	// manager serves it no more (phase Expired). Default 15m; between 1m and 2h.
	// +optional
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('2h')",message="ttl must be between 1m and 2h"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// requestedBy is the user who asked for the session, as the API server knows them;
	// the admission policy holdfast-browse-sessions rejects any other value, so the
	// audit events that name it can be trusted.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	RequestedBy string `json:"requestedBy"`
}

// BrowsePhase is where a browse session is.
// +kubebuilder:validation:Enum=Pending;Ready;Expired;Failed
type BrowsePhase string

const (
	// BrowsePending: the manager is reading the store, or the relay pod is starting.
	BrowsePending BrowsePhase = "Pending"
	// BrowseReady: the restore points are listed and, for a snapshot, the relay pod
	// serves it.
	BrowseReady BrowsePhase = "Ready"
	// BrowseExpired: the ttl passed; nothing is served any more.
	BrowseExpired BrowsePhase = "Expired"
	// BrowseFailed: the session cannot be served (the snapshot is not a restore point
	// of the source, the relay pod cannot start); the Ready condition says why.
	BrowseFailed BrowsePhase = "Failed"
)

// BrowseSessionStatus lists the restore points and says where the snapshot is served.
type BrowseSessionStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// phase: Pending, Ready, Expired, Failed.
	// +optional
	Phase BrowsePhase `json:"phase,omitempty"`

	// sourcePath is the source identity spec.source names.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	SourcePath string `json:"sourcePath,omitempty"`

	// restorePoints are the snapshots of the source that this namespace may read, on
	// every storage location and with both uploaders, newest first.
	// +optional
	// +kubebuilder:validation:MaxItems=200
	RestorePoints []BrowseRestorePoint `json:"restorePoints,omitempty"`

	// restorePointsOmitted counts the older restore points left out beyond 200.
	// +optional
	RestorePointsOmitted int32 `json:"restorePointsOmitted,omitempty"`

	// expiresAt is when the session ends: creation plus spec.ttl.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// relayPod is the pod, in this namespace, that serves spec.snapshotID on
	// 127.0.0.1:RelayPort.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RelayPod string `json:"relayPod,omitempty"`
}

// BrowseRestorePoint is one snapshot of a browse session's source.
type BrowseRestorePoint struct {
	// snapshotID identifies the snapshot in its repository.
	// +required
	// +kubebuilder:validation:MaxLength=128
	SnapshotID string `json:"snapshotID"`
	// time is when the backup started.
	// +required
	Time metav1.Time `json:"time"`
	// size is the total size of the snapshot's files, in bytes.
	// +optional
	Size int64 `json:"size,omitempty"`
	// repository is the BackupRepository holding it.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Repository string `json:"repository"`
	// storageLocation is where its repository is.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageLocation string `json:"storageLocation,omitempty"`
	// uploader wrote it: kopia or restic.
	// +optional
	Uploader Uploader `json:"uploader,omitempty"`
	// backup is the PodVolumeBackup that took it (it may be gone).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Backup string `json:"backup,omitempty"`
	// namespaceUID is the namespace incarnation it was taken in, when that is not this
	// namespace (an adopted earlier namespace of the same name).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	NamespaceUID string `json:"namespaceUID,omitempty"`
}

// BrowseSession is a short-lived, read-only look into the backups of one volume: it
// lists the restore points of a claim or pod volume and, when it names one, serves that
// snapshot's files through a relay pod until its ttl passes. `kubectl holdfast
// snapshots`, `ls` and `get` create them; each read is recorded as an event on the
// session.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=browse,categories=holdfast
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Snapshot",type=string,JSONPath=`.spec.snapshotID`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Requested By",type=string,JSONPath=`.spec.requestedBy`
// +kubebuilder:printcolumn:name="Expires",type=date,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BrowseSession struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says whose restore points to list and which one to open.
	// +required
	Spec BrowseSessionSpec `json:"spec"`

	// status lists the restore points and says where the snapshot is served.
	// +optional
	Status BrowseSessionStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BrowseSessionList is a list of BrowseSessions.
type BrowseSessionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BrowseSession `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BrowseSession{}, &BrowseSessionList{})
}

// RelayPort is the loopback port on which a browse session's relay pod serves.
const RelayPort = 8765

// Browse endpoints, served by the relay pod on its loopback address (and by the manager
// under BrowsePathPrefix): each takes the query parameter path, relative to the
// snapshot's root ("" for the root).
const (
	// BrowseStat answers a JSON BrowseEntry.
	BrowseStat = "/stat"
	// BrowseList answers a JSON array of BrowseEntry, a directory's entries.
	BrowseList = "/ls"
	// BrowseGet answers a tar stream of the entry and everything below it; the header
	// BrowseTotalBytesHeader carries the file bytes to expect, when known.
	BrowseGet = "/get"
	// BrowsePathPrefix is where the manager serves the endpoints to relay pods.
	BrowsePathPrefix = "/browse/v1"
	// BrowseTotalBytesHeader is the size of a download's file contents.
	BrowseTotalBytesHeader = "X-Holdfast-Total-Bytes"
)

// BrowseEntry is one file, directory or link of a snapshot, as the browse endpoints
// answer it.
type BrowseEntry struct {
	Name string `json:"name"`
	// Type: file, dir, symlink or other.
	Type string `json:"type"`
	// Size of a file; of a directory, its files' total when known, else -1.
	Size    int64       `json:"size"`
	Mode    string      `json:"mode"`
	ModTime metav1.Time `json:"modTime"`
	Target  string      `json:"target,omitempty"`
}
