package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxExpressionLength bounds each CEL selector expression.
const MaxExpressionLength = 4096

// VolumeBackupPolicySpec says which volumes to back up, when, where, how and for how long.
type VolumeBackupPolicySpec struct {
	// selector picks the volumes with CEL expressions. A policy with no selector
	// selects every volume that can be backed up.
	// +optional
	Selector VolumeSelector `json:"selector,omitempty"`

	// schedule says when runs start. Without a schedule the policy runs only when its
	// backup.holdfast.dev/run-now annotation changes.
	// +optional
	Schedule *Schedule `json:"schedule,omitempty"`

	// suspend stops new scheduled and run-now runs. Runs in flight finish.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// claimsWithoutPods says what a run does with a bound claim the selector picks
	// (evaluated with pod = null) that no pod uses: Backup (default) starts a small
	// read-only reader pod that mounts the claim and backs it up through it, as K8up and
	// VolSync do (a StatefulSet scaled to zero, a CronJob's claim between runs, a kept
	// claim); Skip skips it with reason NotMounted. A pod of the application that starts
	// while the reader pod holds the claim wins: the backup is canceled and the reader
	// pod deleted.
	// +optional
	// +kubebuilder:default=Backup
	ClaimsWithoutPods ClaimsWithoutPods `json:"claimsWithoutPods,omitempty"`

	// storageLocation is the name of the BackupStorageLocation the backups go to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	StorageLocation string `json:"storageLocation"`

	// uploader moves the data: kopia (default, linked into the agent) or restic.
	// +optional
	// +kubebuilder:default=kopia
	Uploader Uploader `json:"uploader,omitempty"`

	// files says which files of each volume a backup leaves out. Without it every
	// file is backed up: files in the volume (a .kopiaignore, a CACHEDIR.TAG) change
	// nothing unless an option here says so.
	// +optional
	Files *BackupFiles `json:"files,omitempty"`

	// retention says which backups to keep, per source volume. Without it every
	// backup is kept.
	// +optional
	Retention *Retention `json:"retention,omitempty"`

	// deletionPolicy says what happens to the backups when the policy is deleted:
	// Retain (default) keeps every snapshot and PodVolumeBackup; Delete removes them.
	// +optional
	// +kubebuilder:default=Retain
	// +kubebuilder:validation:Enum=Retain;Delete
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// hooks are commands run in the containers of a pod before and after its
	// volumes are backed up, to quiesce an application (flush and freeze a database)
	// and to resume it. A pod with Velero hook annotations
	// (pre.hook.backup.velero.io/*, post.hook.backup.velero.io/*) runs those instead.
	// The manager runs them through the API server's exec, in order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Hooks []BackupHook `json:"hooks,omitempty"`

	// coverage says which volumes are left unprotected on purpose, so that the
	// cluster's coverage (VolumeCoverage cluster, holdfast_unprotected_* metrics) does
	// not report them. It changes nothing about what the policy backs up.
	// +optional
	Coverage *CoverageSpec `json:"coverage,omitempty"`
}

// CoverageSpec is what a policy says about coverage, beyond what it backs up.
type CoverageSpec struct {
	// exclude is a CEL expression over the same variables as spec.selector.volumes
	// (`namespace`, `pod`, `volume`, `pvc`), compiled and limited the same way. A
	// volume it matches that no policy protects is counted as Excluded instead of
	// Unprotected: caches, scratch space, node data. For a claim no pod mounts, `pod`
	// is null and `volume` is {name: <claim>, persistentVolumeClaim: {claimName:
	// <claim>}}. Example: has(volume.emptyDir) && volume.name == "cache"
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Exclude string `json:"exclude,omitempty"`
}

// BackupHook is a command run in a pod's container before and/or after the pod's
// volumes are backed up.
// +kubebuilder:validation:XValidation:rule="has(self.pre) || has(self.post)",message="a hook needs pre, post or both"
type BackupHook struct {
	// name identifies the hook in status and events; unique in the policy.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// pods is a CEL expression over `namespace` and `pod`, compiled and limited like
	// spec.selector.volumes, picking the pods the hook runs in. Empty: every pod
	// whose volumes the policy backs up. Example: pod.metadata.labels[?"app"].orValue("") == "postgres"
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Pods string `json:"pods,omitempty"`

	// container is the container the commands run in. Default: the pod's first
	// spec.containers entry. It may name a native sidecar (an init container with
	// restartPolicy Always).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container,omitempty"`

	// pre runs before the pod's volumes are backed up; none of them is read before
	// it ended.
	// +optional
	Pre *HookCommand `json:"pre,omitempty"`

	// post runs once every volume of the pod in the run finished, whatever the
	// outcome (also after a failed pre hook: it usually undoes what pre did).
	// +optional
	Post *HookCommand `json:"post,omitempty"`
}

// HookCommand is one command, how long it may take and what its failure does.
type HookCommand struct {
	// command is the executable and its arguments, run without a shell (use
	// ["/bin/sh", "-c", "..."] for one).
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command"`

	// timeout is how long the command may run; it then counts as failed. A command
	// that outlives its timeout may keep running in the container.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('1h')",message="timeout must be above 0s and at most 1h"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// onError says what a failure (a non-zero exit, a timeout, a container that is
	// not running) does: Fail (default) fails the pod's volumes without backing them
	// up when it is a pre hook, and the run in any case; Continue records it and
	// goes on.
	// +optional
	// +kubebuilder:default=Fail
	OnError HookOnError `json:"onError,omitempty"`
}

// HookOnError is what a failing hook does.
// +kubebuilder:validation:Enum=Fail;Continue
type HookOnError string

const (
	// HookFail: a failing hook fails the pod's volumes (pre) and the run.
	HookFail HookOnError = "Fail"
	// HookContinue: a failing hook is recorded and the backup goes on.
	HookContinue HookOnError = "Continue"
)

// BackupFiles says which files of a volume a backup leaves out. Each option is off
// by default: Holdfast, not the volume, decides what is backed up.
type BackupFiles struct {
	// excludeCaches leaves out the contents of every cache directory: a directory
	// holding a regular file named CACHEDIR.TAG whose content begins with
	// "Signature: 8a477f597d28d172789f06886806bc55" (the Cache Directory Tagging
	// Specification, as restic --exclude-caches reads it). The directory itself and
	// its CACHEDIR.TAG are kept, so a restore gives back an empty, still tagged cache.
	// A tag with another content, or that is not a regular file, excludes nothing.
	// Each backup counts the directories it left out in status.skipped.cacheDirectories.
	// +optional
	ExcludeCaches bool `json:"excludeCaches,omitempty"`
}

// DeletionPolicy says what deleting a policy does to its backups.
type DeletionPolicy string

const (
	// DeletionRetain keeps the backups of a deleted policy.
	DeletionRetain DeletionPolicy = "Retain"
	// DeletionDelete deletes the backups of a deleted policy.
	DeletionDelete DeletionPolicy = "Delete"
)

// VolumeSelector holds the two CEL expressions that pick volumes. Both must be true
// for a volume to be selected; an absent expression is true. Field names are the
// Kubernetes JSON names, as in ValidatingAdmissionPolicy.
type VolumeSelector struct {
	// namespaces is evaluated once per namespace and sees `namespace` (the Namespace
	// object). Example: namespace.metadata.labels[?"backup"].orValue("") == "gold"
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Namespaces string `json:"namespaces,omitempty"`

	// volumes is evaluated per pod volume and sees `namespace`, `pod`, `volume` (the
	// entry of pod.spec.volumes) and `pvc` (the PersistentVolumeClaim, or null).
	// Example: pvc != null && pvc.spec.storageClassName == "fast"
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Volumes string `json:"volumes,omitempty"`
}

// Schedule is a cron schedule with a time zone and a per-volume jitter.
type Schedule struct {
	// cron is a five-field cron expression: minute hour day-of-month month day-of-week.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')",message="cron must have exactly 5 fields: minute hour day-of-month month day-of-week (no seconds, no @macros)"
	Cron string `json:"cron"`

	// timeZone is the IANA time zone the cron expression is read in (Europe/Paris).
	// Defaults to UTC.
	// +optional
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z][A-Za-z0-9_+\\\\-]*(/[A-Za-z0-9_+\\\\-]+)*$')",message="timeZone must be an IANA time zone name such as UTC or Europe/Paris"
	TimeZone string `json:"timeZone,omitempty"`

	// jitter spreads the start of each volume's backup over this window after the
	// tick, by a stable hash of the volume, so that a thousand volumes do not start in
	// the same second. Zero starts them all at the tick. The jitter plus a minute of
	// retries must fit in the shortest interval between two ticks (the webhook
	// rejects a longer one): a tick that comes first would supersede the run.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="jitter must be between 0s and 24h"
	Jitter *metav1.Duration `json:"jitter,omitempty"`
}

// Retention keeps the newest keepLast backups plus the newest backup of each of the
// last keepHourly hours, keepDaily days, and so on, per source volume. A backup kept by
// any rule is kept.
// +kubebuilder:validation:XValidation:rule="[self.keepLast, self.keepHourly, self.keepDaily, self.keepWeekly, self.keepMonthly, self.keepYearly].exists(k, k > 0)",message="retention must keep something: set at least one keep* count above 0, or remove retention to keep every backup"
type Retention struct {
	// keepLast keeps the newest N backups.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepLast int32 `json:"keepLast"`
	// keepHourly keeps the newest backup of each of the last N hours that have one.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepHourly int32 `json:"keepHourly"`
	// keepDaily keeps the newest backup of each of the last N days that have one.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepDaily int32 `json:"keepDaily"`
	// keepWeekly keeps the newest backup of each of the last N weeks that have one.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepWeekly int32 `json:"keepWeekly"`
	// keepMonthly keeps the newest backup of each of the last N months that have one.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepMonthly int32 `json:"keepMonthly"`
	// keepYearly keeps the newest backup of each of the last N years that have one.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=0
	KeepYearly int32 `json:"keepYearly"`

	// maxExpirePercent refuses to expire more than this share of one source's backups
	// in a single pass, so that a mistake cannot wipe history at once. The pass is
	// skipped and reported instead.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxExpirePercent int32 `json:"maxExpirePercent,omitempty"`
}

// VolumeBackupPolicyStatus tells what the policy selects and how its runs went.
type VolumeBackupPolicyStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling, Stalled (for example a selector that does not
	// compile, with its field path).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// selectedNamespaces is the number of namespaces with at least one selected volume.
	// +optional
	SelectedNamespaces int32 `json:"selectedNamespaces"`

	// selectedVolumes is the number of pod volumes the policy backs up.
	// +optional
	SelectedVolumes int32 `json:"selectedVolumes"`

	// skippedVolumes is the number of volumes the selector picked that cannot be
	// backed up; skipped says why.
	// +optional
	SkippedVolumes int32 `json:"skippedVolumes"`

	// skipped counts the selected volumes that cannot be backed up, by reason
	// (HostPath, Secret, ConfigMap, Projected, DownwardAPI, BlockMode, PodNotRunning,
	// NoNode, ...), with a few examples each.
	// +optional
	// +listType=map
	// +listMapKey=reason
	// +kubebuilder:validation:MaxItems=32
	Skipped []SkippedVolumes `json:"skipped,omitempty"`

	// lastScheduleTime is the last cron tick that started a run.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// nextScheduleTime is the next cron tick, absent without a schedule or when suspended.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`

	// lastRunNowToken is the value of the run-now annotation that was last handled.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastRunNowToken string `json:"lastRunNowToken,omitempty"`

	// lastRun summarises the most recent run.
	// +optional
	LastRun *RunSummary `json:"lastRun,omitempty"`
}

// SkippedVolumes counts the selected volumes skipped for one reason.
type SkippedVolumes struct {
	// reason the volumes cannot be backed up.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// count of volumes skipped for this reason.
	// +required
	Count int32 `json:"count"`
	// examples are a few of them, as <namespace>/<pod>/<volume>.
	// +optional
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:items:MaxLength=512
	Examples []string `json:"examples,omitempty"`
}

// RunOutcome is how a run ended, or that it has not yet.
// +kubebuilder:validation:Enum=InProgress;Succeeded;PartiallyFailed;Failed
type RunOutcome string

const (
	// RunOutcomeInProgress: some volumes are still being backed up.
	RunOutcomeInProgress RunOutcome = "InProgress"
	// RunOutcomeSucceeded: every selected volume was backed up (skipped volumes aside).
	RunOutcomeSucceeded RunOutcome = "Succeeded"
	// RunOutcomePartiallyFailed: some selected volumes were backed up, some were not
	// (their backup failed, or their PodVolumeBackup could not be created).
	RunOutcomePartiallyFailed RunOutcome = "PartiallyFailed"
	// RunOutcomeFailed: no volume was backed up.
	RunOutcomeFailed RunOutcome = "Failed"
)

// RunSummary is one run of a policy, aggregated from its PodVolumeBackups.
type RunSummary struct {
	// name of the run; the PodVolumeBackups of the run carry it in the
	// backup.holdfast.dev/run label.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// trigger is what started the run: Schedule or RunNow.
	// +optional
	// +kubebuilder:validation:Enum=Schedule;RunNow
	Trigger string `json:"trigger,omitempty"`
	// outcome of the run so far.
	// +optional
	Outcome RunOutcome `json:"outcome,omitempty"`
	// startTime is when the run started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// completionTime is when the last volume of the run finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// creationEndTime is when the run stopped creating PodVolumeBackups: every volume
	// it selected had one, or its creation window (the jitter, plus a minute of
	// retries) closed. A volume still without a PodVolumeBackup then counts as failed
	// with reason CreateFailed. Absent while the run is still creating.
	// +optional
	CreationEndTime *metav1.Time `json:"creationEndTime,omitempty"`
	// volumesSelected is the number of volumes the run set out to back up: those it
	// created a PodVolumeBackup for and those it could not. Skipped volumes are not
	// in it. The run is Succeeded only when all of them were backed up.
	// +optional
	VolumesSelected int32 `json:"volumesSelected"`
	// volumesCompleted is the number of volumes backed up.
	// +optional
	VolumesCompleted int32 `json:"volumesCompleted"`
	// volumesFailed is the number of selected volumes that were not backed up: their
	// backup failed or was canceled, or their PodVolumeBackup could not be created
	// before the creation window closed. failures says which and why.
	// +optional
	VolumesFailed int32 `json:"volumesFailed"`
	// failures counts the volumes of volumesFailed by reason: CreateFailed (the API
	// server refused the PodVolumeBackup or its BackupRepository: a quota, an
	// admission policy), BackupFailed or Canceled, with a few examples each. While the
	// run is creating, CreateFailed counts the creates that failed on the last attempt
	// and are being retried.
	// +optional
	// +listType=map
	// +listMapKey=reason
	// +kubebuilder:validation:MaxItems=8
	Failures []RunFailures `json:"failures,omitempty"`
	// hooksFailed is the number of hook runs with onError Fail that failed. A run
	// with a failed hook is never Succeeded, and its message names the first one.
	// +optional
	HooksFailed int32 `json:"hooksFailed,omitempty"`
	// volumesSkipped is the number of selected volumes the run did not back up
	// (for example InFlight: the previous backup of the volume was still running).
	// +optional
	VolumesSkipped int32 `json:"volumesSkipped"`
	// volumesTotal is the number of PodVolumeBackups the run created.
	// +optional
	VolumesTotal int32 `json:"volumesTotal"`
	// bytesUploaded is the new data the run sent to the store.
	// +optional
	BytesUploaded int64 `json:"bytesUploaded"`
	// message says why a run did not back up every selected volume: it could not
	// start (its storage location was missing or not Ready), every selected volume
	// was skipped, or some failed (failures says which). Empty for runs in progress
	// and runs that Succeeded.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Message string `json:"message,omitempty"`
}

// RunFailures counts the volumes of a run that were not backed up for one reason.
type RunFailures struct {
	// reason the volumes were not backed up: CreateFailed, BackupFailed or Canceled.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// count of volumes that failed for this reason.
	// +required
	Count int32 `json:"count"`
	// examples are a few of them, as <namespace>/<pod>/<volume>: <message>, the
	// message being the API server's or the agent's own.
	// +optional
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:items:MaxLength=1024
	Examples []string `json:"examples,omitempty"`
}

// VolumeBackupPolicy selects pod volumes with CEL and backs them up on a schedule.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vbp,categories=holdfast
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Volumes",type=integer,JSONPath=`.status.selectedVolumes`
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.skippedVolumes`
// +kubebuilder:printcolumn:name="Last Run",type=date,JSONPath=`.status.lastRun.startTime`
// +kubebuilder:printcolumn:name="Outcome",type=string,JSONPath=`.status.lastRun.outcome`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.lastRun.volumesFailed`,priority=1
// +kubebuilder:printcolumn:name="Next Run",type=date,JSONPath=`.status.nextScheduleTime`
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.spec.storageLocation`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VolumeBackupPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which volumes, when, where, how and for how long.
	// +required
	Spec VolumeBackupPolicySpec `json:"spec"`

	// status tells what the policy selects and how its runs went.
	// +optional
	Status VolumeBackupPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// VolumeBackupPolicyList is a list of VolumeBackupPolicies.
type VolumeBackupPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VolumeBackupPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VolumeBackupPolicy{}, &VolumeBackupPolicyList{})
}

// ClaimsWithoutPods is what a run does with a selected claim no pod uses.
// +kubebuilder:validation:Enum=Backup;Skip
type ClaimsWithoutPods string

const (
	// ClaimsWithoutPodsBackup backs the claim up through a reader pod.
	ClaimsWithoutPodsBackup ClaimsWithoutPods = "Backup"
	// ClaimsWithoutPodsSkip skips the claim as NotMounted.
	ClaimsWithoutPodsSkip ClaimsWithoutPods = "Skip"
)
