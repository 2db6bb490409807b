package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodVolumeBackupSpec is one volume of one pod to back up in one run. Everything but
// cancel and tags is fixed at creation.
// +kubebuilder:validation:XValidation:rule="has(self.claimName) == has(oldSelf.claimName) && has(self.files) == has(oldSelf.files) && has(self.tags) == has(oldSelf.tags) && has(self.parentSnapshotID) == has(oldSelf.parentSnapshotID) && (!has(self.parentSnapshotID) || self.parentSnapshotID == oldSelf.parentSnapshotID) && has(self.hooks) == has(oldSelf.hooks)",message="claimName, files, tags, parentSnapshotID and hooks are fixed at creation"
type PodVolumeBackupSpec struct {
	// node is the node the pod runs on; only that node's agent handles the backup
	// (a selectable field, so each agent watches only its own node's work).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="node is immutable"
	Node string `json:"node"`

	// pod is the pod whose volume is backed up.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="pod is immutable"
	Pod PodReference `json:"pod"`

	// volume is the name of the volume in pod.spec.volumes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="volume is immutable"
	Volume string `json:"volume"`

	// claimName is the PersistentVolumeClaim behind the volume, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="claimName is immutable"
	ClaimName string `json:"claimName,omitempty"`

	// sourcePath is the volume's source identity inside the namespace's repository:
	// /pvc/<claim>, /<owner-kind>/<owner-name>/<volume> for a pod with a controller
	// owner, /pod/<pod>/<volume> otherwise. Backups of the same sourcePath form one
	// incremental chain, across pod recreation.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="sourcePath must start with '/'"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="sourcePath is immutable"
	SourcePath string `json:"sourcePath"`

	// storageLocation is the BackupStorageLocation the backup goes to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storageLocation is immutable"
	StorageLocation string `json:"storageLocation"`

	// repository is the BackupRepository, in this namespace, the backup is written to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="repository is immutable"
	Repository string `json:"repository"`

	// uploader moves the data: kopia or restic.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="uploader is immutable"
	Uploader Uploader `json:"uploader"`

	// files says which files of the volume the backup leaves out: the policy's
	// spec.files when the backup was created. Absent: every file is backed up.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="files is immutable"
	Files *BackupFiles `json:"files,omitempty"`

	// tags are recorded with the snapshot (policy, run, namespace, pod, volume are
	// always recorded).
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="tags are immutable"
	Tags map[string]string `json:"tags,omitempty"`

	// parentSnapshotID is the snapshot this backup is incremental to: the policy
	// controller picks the newest backup of the same source taken in this namespace
	// (or in an earlier namespace of the same name that this one adopts). Empty: the
	// backup reads every file, and the store still keeps each piece of data once.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ParentSnapshotID string `json:"parentSnapshotID,omitempty"`

	// hooks are the commands run in the pod before and after its volumes are backed
	// up, resolved from the policy's spec.hooks or the pod's Velero hook annotations
	// when the run created this backup. The agent does not read the volume before
	// the PreHooks condition is set.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="hooks are immutable"
	Hooks *ResolvedHooks `json:"hooks,omitempty"`

	// cancel asks the agent to stop the backup; it ends Canceled.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// LabelHooks is set to "true" on a PodVolumeBackup whose pod has hooks, so that the
// manager's hook controller watches only those.
const LabelHooks = "backup.holdfast.dev/hooks"

// HookSourceAnnotations is ResolvedHook.source for a hook read from the pod's Velero
// annotations.
const HookSourceAnnotations = "annotations"

// ResolvedHooks are the hooks of a pod, in the order they run.
type ResolvedHooks struct {
	// pre run, in order, before the pod's volumes are backed up.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Pre []ResolvedHook `json:"pre,omitempty"`
	// post run, in order, once every volume of the pod in the run finished.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Post []ResolvedHook `json:"post,omitempty"`
}

// ResolvedHook is one command to run in one container.
type ResolvedHook struct {
	// name of the hook: the policy hook's name, or pre/post for annotations.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// source is the policy hook it comes from, or "annotations".
	// +required
	// +kubebuilder:validation:MaxLength=63
	Source string `json:"source"`
	// container the command runs in.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container"`
	// command and its arguments.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command"`
	// timeout of the command.
	// +required
	Timeout metav1.Duration `json:"timeout"`
	// onError: Fail or Continue.
	// +required
	OnError HookOnError `json:"onError"`
}

// HookStage is when a hook runs: Pre or Post.
// +kubebuilder:validation:Enum=Pre;Post
type HookStage string

const (
	HookStagePre  HookStage = "Pre"
	HookStagePost HookStage = "Post"
)

// HookResult is how one hook run ended.
// +kubebuilder:validation:Enum=Succeeded;Failed
type HookResult string

const (
	HookSucceeded HookResult = "Succeeded"
	HookFailed    HookResult = "Failed"
)

// HookOutcome is what one hook run did.
type HookOutcome struct {
	// name of the hook.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// stage: Pre or Post.
	// +required
	Stage HookStage `json:"stage"`
	// container the command ran in.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container,omitempty"`
	// outcome: Succeeded or Failed.
	// +required
	Outcome HookResult `json:"outcome"`
	// onError the hook had: a Failed hook with Continue did not stop the backup.
	// +optional
	OnError HookOnError `json:"onError,omitempty"`
	// message is the exit code and the end of the output, in one sentence.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Message string `json:"message,omitempty"`
	// startTime is when the command started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// completionTime is when it ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// Conditions the manager's hook controller sets on a PodVolumeBackup with hooks, and
// their reason.
const (
	// ConditionPreHooks is True once the pre hooks ran (or failed with Continue),
	// False when one with onError Fail failed: the volume is then not backed up.
	ConditionPreHooks = "PreHooks"
	// ConditionPostHooks is True once the post hooks ran, False when one failed or
	// could not run.
	ConditionPostHooks = "PostHooks"
	// ReasonHookFailed: a hook failed.
	ReasonHookFailed = "HookFailed"
	// ReasonHooksSucceeded: every hook ran (a failure with Continue included).
	ReasonHooksSucceeded = "HooksSucceeded"
)

// The condition the manager sets on a Completed PodVolumeBackup once it has compared
// its file count with the earlier backups of the same source, and its reasons.
const (
	// ConditionFilesDropped is True when a Completed backup holds no files, or a tiny
	// fraction of them, where the newest earlier backup of the same source with files
	// had many: the volume may not have been mounted when it was read, or it was
	// wiped. Retention then also keeps that earlier backup, and restoring "latest"
	// does not pick this one silently. False once the count was checked and is
	// plausible.
	ConditionFilesDropped = "FilesDropped"
	// ReasonNoFiles: the backup holds no file, the earlier one had some.
	ReasonNoFiles = "NoFiles"
	// ReasonFewFiles: the backup holds under 1% of the files of an earlier one that
	// had at least 1000.
	ReasonFewFiles = "FewFiles"
	// ReasonFileCountPlausible: the count was checked and nothing dropped.
	ReasonFileCountPlausible = "FileCountPlausible"
)

// PodVolumeBackupStatus is the progress and outcome of one volume's backup.
type PodVolumeBackupStatus struct {
	// phase is where the backup is: Pending, InProgress, Completed, Failed, Canceled.
	// +optional
	Phase RunPhase `json:"phase,omitempty"`

	// conditions: Ready is True once the snapshot is stored; Stalled when it failed;
	// FilesDropped (set by the manager) when a Completed backup suddenly holds no or
	// very few files; PreHooks and PostHooks (set by the manager) when the pod has
	// hooks.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// message says, in one sentence, why the backup failed or was canceled.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// progress counts bytes and files done and in total, updated every few seconds.
	// +optional
	Progress Progress `json:"progress,omitempty"`

	// bytesUploaded is the new data sent to the store (the incremental size).
	// +optional
	BytesUploaded int64 `json:"bytesUploaded,omitempty"`

	// bytesReused are the bytes of large files changed since the parent snapshot that
	// were taken from it without being read into chunks again: the regions whose bytes
	// did not change (kopia only; see docs/agent.md).
	// +optional
	BytesReused int64 `json:"bytesReused,omitempty"`

	// snapshotID identifies the snapshot in the repository.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SnapshotID string `json:"snapshotID,omitempty"`

	// parentSnapshotID is the earlier snapshot of the same source this one is
	// incremental to, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ParentSnapshotID string `json:"parentSnapshotID,omitempty"`

	// skipped counts, by why, the entries of the volume a Completed backup left out of
	// its snapshot; absent when it left nothing out.
	// +optional
	Skipped *SkippedEntries `json:"skipped,omitempty"`

	// hooks are the outcomes of the pod's hook runs, pre then post.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Hooks []HookOutcome `json:"hooks,omitempty"`

	// startTime is when the agent started moving data.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the backup ended, whatever the outcome.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// SkippedEntries counts the entries a backup left out of its snapshot, by why. A
// count is absent when it is zero.
type SkippedEntries struct {
	// vanished entries were deleted between the listing of their directory and their
	// reading: usual on a live volume (temporary files, rotated logs).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Vanished int64 `json:"vanished,omitempty"`

	// changedType entries were replaced by another kind of entry while they were read.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ChangedType int64 `json:"changedType,omitempty"`

	// sockets are Unix sockets, which no uploader stores: the application that owns
	// one makes it again.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Sockets int64 `json:"sockets,omitempty"`

	// fifos are named pipes the uploader could not store.
	// +optional
	// +kubebuilder:validation:Minimum=0
	FIFOs int64 `json:"fifos,omitempty"`

	// devices are device nodes the uploader could not store.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Devices int64 `json:"devices,omitempty"`

	// cacheDirectories are the cache directories (spec.files.excludeCaches) whose
	// contents were left out on purpose; each one's CACHEDIR.TAG is kept.
	// +optional
	// +kubebuilder:validation:Minimum=0
	CacheDirectories int64 `json:"cacheDirectories,omitempty"`
}

// PodVolumeBackup is one volume of one pod backed up in one run. The policy controller
// creates it; the agent on spec.node does the work and reports in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pvb,categories=holdfast
// +kubebuilder:selectablefield:JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.pod.name`
// +kubebuilder:printcolumn:name="Volume",type=string,JSONPath=`.spec.volume`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Bytes Done",type=integer,JSONPath=`.status.progress.bytesDone`
// +kubebuilder:printcolumn:name="Bytes Total",type=integer,JSONPath=`.status.progress.totalBytes`
// +kubebuilder:printcolumn:name="Uploaded",type=integer,JSONPath=`.status.bytesUploaded`,priority=1
// +kubebuilder:printcolumn:name="Snapshot",type=string,JSONPath=`.status.snapshotID`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PodVolumeBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the volume to back up and where to.
	// +required
	Spec PodVolumeBackupSpec `json:"spec"`

	// status is the progress and outcome.
	// +optional
	Status PodVolumeBackupStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PodVolumeBackupList is a list of PodVolumeBackups.
type PodVolumeBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PodVolumeBackup `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PodVolumeBackup{}, &PodVolumeBackupList{})
}
