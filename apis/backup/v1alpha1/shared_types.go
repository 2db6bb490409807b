package v1alpha1

// Condition types. Every kind a user writes carries Ready, Reconciling and Stalled with
// kstatus semantics, so Flux health checks and Argo CD read the same story.
const (
	// ConditionReady is True when the object does what it asks for.
	ConditionReady = "Ready"
	// ConditionReconciling is True while a controller is still working towards Ready.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when only a change by the user can make progress.
	ConditionStalled = "Stalled"
)

// Labels and annotations Holdfast puts on the objects it creates.
const (
	// LabelPolicy names the VolumeBackupPolicy that created an object.
	LabelPolicy = "backup.holdfast.dev/policy"
	// LabelRun names the run of a policy that created a PodVolumeBackup.
	LabelRun = "backup.holdfast.dev/run"
	// LabelStorageLocation names the BackupStorageLocation an object writes to.
	LabelStorageLocation = "backup.holdfast.dev/storage-location"
	// LabelManagedBy is app.kubernetes.io/managed-by; Holdfast sets it to ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on objects Holdfast creates.
	ManagedByValue = "holdfast"
	// AnnotationRunNow on a VolumeBackupPolicy starts one run each time its value changes.
	AnnotationRunNow = "backup.holdfast.dev/run-now"
	// LabelRestore names the VolumeRestore a PodVolumeRestore belongs to.
	LabelRestore = "backup.holdfast.dev/restore"
	// AnnotationRestoreInto on a Namespace lists, comma-separated, the namespaces that
	// may restore its backups (VolumeRestore spec.sourceNamespace). Without it, none may.
	AnnotationRestoreInto = "backup.holdfast.dev/restore-into"
	// AnnotationAdoptBackups on a Namespace lets it restore, and continue, the backups
	// of earlier namespaces of the same name (deleted and created again, or of a lost
	// cluster): comma-separated namespace UIDs, or "*" for all of them. Without it a
	// namespace sees only the backups taken in itself, so a namespace name that is
	// freed and reused never inherits another team's data. Only who may update the
	// Namespace object (an administrator, not its tenants) can set it.
	AnnotationAdoptBackups = "backup.holdfast.dev/adopt-backups"
	// AnnotationRestoreWait on a Pod names the VolumeRestores its restore-wait init
	// containers wait for; the webhook sets it.
	AnnotationRestoreWait = "backup.holdfast.dev/restore-wait"
)

// Uploader is the program that moves a volume's data to the repository.
// +kubebuilder:validation:Enum=kopia;restic
type Uploader string

const (
	// UploaderKopia uses kopia, linked into the agent as a library.
	UploaderKopia Uploader = "kopia"
	// UploaderRestic runs the restic binary shipped in the agent image.
	UploaderRestic Uploader = "restic"
)

// PodReference names one pod and pins it by UID, so a pod recreated under the same
// name is never mistaken for the one the object was made for.
type PodReference struct {
	// name of the pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// uid of the pod; the agent finds the volume under <kubelet root>/pods/<uid>.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid"`
}

// RunPhase is where a per-volume run object (PodVolumeBackup, PodVolumeRestore) is in
// its life.
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;Failed;Canceled
type RunPhase string

const (
	// RunPending: created, not yet picked up by the agent on its node.
	RunPending RunPhase = "Pending"
	// RunInProgress: the agent is moving data.
	RunInProgress RunPhase = "InProgress"
	// RunCompleted: the data is safely stored (backup) or in place (restore).
	RunCompleted RunPhase = "Completed"
	// RunFailed: stopped with an error; status.message says why in one sentence.
	RunFailed RunPhase = "Failed"
	// RunCanceled: stopped because spec.cancel was set.
	RunCanceled RunPhase = "Canceled"
)

// Progress counts the bytes and files of one volume, done and in total. The agent
// updates it every few seconds while it works, not per file.
type Progress struct {
	// totalBytes is the size of the volume's files, once known.
	// +optional
	TotalBytes int64 `json:"totalBytes,omitempty"`
	// bytesDone is how many of totalBytes have been processed.
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`
	// totalFiles is the number of files in the volume, once known.
	// +optional
	TotalFiles int64 `json:"totalFiles,omitempty"`
	// filesDone is how many of totalFiles have been processed.
	// +optional
	FilesDone int64 `json:"filesDone,omitempty"`
}
