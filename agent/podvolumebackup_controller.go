package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/internal/version"
)

// Reasons on PodVolumeBackup and PodVolumeRestore conditions.
const (
	reasonWaiting      = "WaitingForRepository"
	reasonInProgress   = "InProgress"
	reasonFailed       = "Failed"
	reasonCanceled     = "Canceled"
	reasonAgentRestart = "AgentRestarted"
	// reasonWaitingForHooks: the backup waits for its pod's pre hooks (run by the
	// manager).
	reasonWaitingForHooks = "WaitingForPreHooks"
)

// Reasons of the events that name what a Completed job did not preserve.
const (
	reasonEntriesSkipped     = "EntriesSkipped"
	reasonEntriesNotRestored = "EntriesNotRestored"
)

// msgAgentRestarted is the status message of work an agent restart interrupted.
const msgAgentRestarted = "the agent restarted while this volume was being moved; the work did not finish"

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims;persistentvolumes,verbs=get
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=services,verbs=get,resourceNames=holdfast-webhook-service
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get,resourceNames=holdfast-mutating-webhook-configuration

// PodVolumeBackupReconciler backs up the volumes of the PodVolumeBackups of its node.
type PodVolumeBackupReconciler struct {
	*Agent
	jobs *jobs
	// again brings back work whose claim failed for a passing reason.
	again chan event.GenericEvent
}

func (r *PodVolumeBackupReconciler) setup(mgr ctrl.Manager) error {
	r.again = make(chan event.GenericEvent)
	return ctrl.NewControllerManagedBy(mgr).
		WatchesRawSource(source.Channel(r.again, &handler.EnqueueRequestForObject{})).
		Named("podvolumebackup").
		For(&v1.PodVolumeBackup{}).
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(r.backupsOfRepository),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.backupsOfPod)).
		Complete(r)
}

// Reconcile starts the backup of a Pending PodVolumeBackup, cancels one on request or
// when its pod goes away, and fails one that an agent restart left InProgress.
func (r *PodVolumeBackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvb := &v1.PodVolumeBackup{}
	if err := r.Get(ctx, req.NamespacedName, pvb); err != nil {
		if apierrors.IsNotFound(err) {
			r.jobs.ended(req.NamespacedName) // deleted while it waited out a lock
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pvb.Spec.Node != r.opts.NodeName {
		return ctrl.Result{}, nil
	}
	key := req.NamespacedName
	v, err := r.triage(ctx, r.jobs, key, "PodVolumeBackup", backupState(pvb), func() (workState, error) {
		err := r.apiReader.Get(ctx, key, pvb)
		return backupState(pvb), err
	})
	switch {
	case err != nil || v == verdictNone:
		return ctrl.Result{}, err
	case v == verdictRestarted:
		return ctrl.Result{}, r.end(ctx, pvb, failed(reasonAgentRestart, msgAgentRestarted))
	case v == verdictCanceledEarly:
		return ctrl.Result{}, r.end(ctx, pvb, canceled("canceled before the backup started"))
	}
	if waitingForPreHooks(pvb) {
		// The manager runs the pod's pre hooks (it watches the backup) and sets
		// PreHooks; the volume is not read before.
		return ctrl.Result{}, r.waitPreHooks(ctx, pvb)
	}
	if wait := r.jobs.lockWait(key, time.Now()); wait > 0 {
		// It found the repository locked: it waits before it is tried again.
		return ctrl.Result{RequeueAfter: wait}, nil
	}

	err = r.repositoryReady(ctx, pvb.Namespace, pvb.Spec.Repository)
	var wait errNotReady
	var stalled errStalled
	switch {
	case errors.As(err, &wait):
		// The repository controller is still creating the repository: it is watched.
		return ctrl.Result{RequeueAfter: time.Minute}, r.waiting(ctx, pvb, wait.msg)
	case errors.As(err, &stalled):
		return ctrl.Result{}, r.end(ctx, pvb, failed(reasonFailed, stalled.msg))
	case err != nil:
		// Reading the repository failed: a passing error, retried with backoff.
		return ctrl.Result{}, fmt.Errorf("reading BackupRepository %s: %w", pvb.Spec.Repository, err)
	}
	job := mover.Job{Kind: mover.KindBackup, SourcePath: pvb.Spec.SourcePath, Tags: backupTags(pvb, r.opts.NodeName), Parent: pvb.Spec.ParentSnapshotID,
		ExcludeCaches: pvb.Spec.Files != nil && pvb.Spec.Files.ExcludeCaches}
	if job.Parent == "" {
		// The policy controller found no earlier backup of this source that this
		// namespace may continue.
		job.Parent = repository.NoParent
	}
	work := pvb.DeepCopy()
	r.jobs.start(context.WithoutCancel(ctx), key, types.UID(pvb.Spec.Pod.UID), func(ctx context.Context, stopReason func() string) bool {
		return r.backup(ctx, work, job, stopReason)
	}, func() { r.again <- event.GenericEvent{Object: work} })
	return ctrl.Result{}, nil
}

// backup runs in its own goroutine once a slot is free, and leaves the PodVolumeBackup
// in a final phase unless another agent claimed it, or claiming it failed (then it
// returns true: the work is reconciled again).
func (r *PodVolumeBackupReconciler) backup(ctx context.Context, pvb *v1.PodVolumeBackup, job mover.Job, stopReason func() string) bool {
	log := ctrl.LoggerFrom(ctx).WithValues("podvolumebackup", client.ObjectKeyFromObject(pvb))
	ctx = ctrl.LoggerInto(ctx, log)
	// Status writes must land even after the job's context is canceled.
	bg := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		r.endOrLog(bg, pvb, canceled("canceled before the backup started"))
		return false
	}
	tgt, err := r.resolveTarget(ctx, pvb.Namespace, pvb.Spec.Pod, pvb.Spec.Volume)
	if err != nil {
		r.endOrLog(bg, pvb, failed(reasonFailed, err.Error()))
		return false
	}
	job.Dir, job.Root = tgt.moverDir()
	req := jobcredentials.Request{Kind: jobcredentials.KindBackup, Namespace: pvb.Namespace, Name: pvb.Name, UID: pvb.UID}
	job, err = r.withCredentials(ctx, req, job, func(msg string) {
		if err := r.waiting(bg, pvb, msg); err != nil {
			log.Error(err, "reporting the wait for the repository key")
		}
	})
	switch {
	case ctx.Err() != nil:
		r.endOrLog(bg, pvb, canceled("canceled before the backup started"))
		return false
	case err != nil:
		r.endOrLog(bg, pvb, failed(reasonFailed, err.Error()))
		return false
	}
	if claimed, err := r.claim(bg, pvb); !claimed {
		if err != nil {
			log.Error(err, "claiming the backup; trying again")
			return true
		}
		log.Info("the backup is no longer Pending (claimed by another agent, canceled or deleted); not running it")
		return false
	}
	r.recorder.Eventf(pvb, nil, corev1.EventTypeNormal, "BackupStarted", "Backup", "backing up volume %s of pod %s on %s", pvb.Spec.Volume, pvb.Spec.Pod.Name, r.opts.NodeName)

	res, err := r.runMover(ctx, job, func(p mover.Progress) {
		if err := patchStatus(bg, r.Client, pvb, func(o *v1.PodVolumeBackup) { o.Status.Progress = toProgress(p) }); err != nil {
			log.Error(err, "publishing progress")
		}
	})
	o := moverOutcome(res, err, stopReason(), "canceled: spec.cancel was set; earlier snapshots are untouched",
		storedMessage(res))
	if o.phase == v1.RunPending {
		// The repository stayed locked: nothing was stored; back in the queue.
		r.locked(bg, pvb)
		return true
	}
	r.endOrLog(bg, pvb, o)
	return false
}

// claim moves the backup from Pending to InProgress, unless another agent did (see
// claimWork).
func (r *PodVolumeBackupReconciler) claim(ctx context.Context, pvb *v1.PodVolumeBackup) (bool, error) {
	return claimWork(ctx, r.Client, r.apiReader, pvb,
		func(o *v1.PodVolumeBackup) bool { return isClaimable(backupState(o)) },
		func(o *v1.PodVolumeBackup) {
			o.Status.Phase = v1.RunInProgress
			o.Status.Message = ""
			o.Status.StartTime = now()
			conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonInProgress,
				fmt.Sprintf("backing up volume %s of pod %s", o.Spec.Volume, o.Spec.Pod.Name))
		})
}

// locked puts a backup that found its repository locked by maintenance back to Pending
// (backToPendingLocked).
func (r *PodVolumeBackupReconciler) locked(ctx context.Context, pvb *v1.PodVolumeBackup) {
	backToPendingLocked(ctx, r.Agent, r.jobs, pvb, "backup", func(o *v1.PodVolumeBackup, msg string) {
		o.Status.Phase = v1.RunPending
		o.Status.StartTime = nil
		o.Status.Message = msg
		conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonRepositoryLocked, msg)
	})
}

func (r *PodVolumeBackupReconciler) endOrLog(ctx context.Context, pvb *v1.PodVolumeBackup, o outcome) {
	if err := r.end(ctx, pvb, o); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "recording the outcome of the backup", "phase", o.phase)
	}
}

// end records a final phase with its one-sentence message (the write is retried) and
// an event.
func (r *PodVolumeBackupReconciler) end(ctx context.Context, pvb *v1.PodVolumeBackup, o outcome) error {
	r.jobs.ended(client.ObjectKeyFromObject(pvb))
	var skipped *v1.SkippedEntries
	if o.phase == v1.RunCompleted && o.res != nil {
		skipped = toSkipped(o.res.Skipped)
	}
	err := patchFinalStatus(ctx, r.Client, pvb, func(b *v1.PodVolumeBackup) {
		st := &b.Status
		st.Phase = o.phase
		st.CompletionTime = now()
		if st.StartTime == nil {
			st.StartTime = st.CompletionTime
		}
		if o.res != nil {
			st.Progress = toProgress(o.res.Progress)
			st.SnapshotID = o.res.SnapshotID
			st.ParentSnapshotID = o.res.ParentSnapshotID
			st.BytesUploaded = o.res.BytesUploaded
			st.BytesReused = o.res.BytesReused
		}
		if o.phase == v1.RunCompleted {
			st.Skipped = skipped
			st.Message = ""
			conditions.MarkReady(&st.Conditions, b.Generation, o.reason, o.msg)
			return
		}
		st.Message = o.msg
		conditions.MarkStalled(&st.Conditions, b.Generation, o.reason, o.msg)
	})
	if err == nil {
		r.metrics.ended(mover.KindBackup, o.phase)
	}
	eventType := corev1.EventTypeNormal
	if o.phase != v1.RunCompleted {
		eventType = corev1.EventTypeWarning
	}
	r.recorder.Eventf(pvb, nil, eventType, "Backup"+string(o.phase), "Backup", "%s", o.msg)
	if eventType, msg, ok := skippedEvent(skipped); ok {
		r.recorder.Eventf(pvb, nil, eventType, reasonEntriesSkipped, "Backup", "%s", msg)
	}
	ctrl.LoggerFrom(ctx).Info("backup finished", "podvolumebackup", client.ObjectKeyFromObject(pvb), "phase", o.phase, "message", o.msg)
	return err
}

func (r *PodVolumeBackupReconciler) waiting(ctx context.Context, pvb *v1.PodVolumeBackup, msg string) error {
	if pvb.Status.Message == msg && pvb.Status.Phase == v1.RunPending {
		return nil
	}
	return patchStatus(ctx, r.Client, pvb, func(o *v1.PodVolumeBackup) {
		o.Status.Phase = v1.RunPending
		o.Status.Message = msg
		conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonWaiting, msg)
	})
}

// waitingForPreHooks reports whether the backup's pod has pre hooks that have not
// run yet.
func waitingForPreHooks(pvb *v1.PodVolumeBackup) bool {
	return pvb.Spec.Hooks != nil && len(pvb.Spec.Hooks.Pre) > 0 &&
		apimeta.FindStatusCondition(pvb.Status.Conditions, v1.ConditionPreHooks) == nil
}

// waitPreHooks says in status that the backup waits for its pod's pre hooks. The
// write is conditional on the version read: a plain merge patch from a cache that has
// not seen the manager's PreHooks would remove it.
func (r *PodVolumeBackupReconciler) waitPreHooks(ctx context.Context, pvb *v1.PodVolumeBackup) error {
	msg := "waiting for the pre hooks of pod " + pvb.Spec.Pod.Name
	if pvb.Status.Message == msg && pvb.Status.Phase == v1.RunPending {
		return nil
	}
	err := patchStatus(ctx, r.Client, pvb, func(o *v1.PodVolumeBackup) {
		o.Status.Phase = v1.RunPending
		o.Status.Message = msg
		conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonWaitingForHooks, msg)
	}, client.MergeFromWithOptimisticLock{})
	if apierrors.IsConflict(err) {
		return nil // changed meanwhile: the watch brings the newer version
	}
	return err
}

func (r *PodVolumeBackupReconciler) backupsOfRepository(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1.PodVolumeBackupList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, pvb := range list.Items {
		if pvb.Spec.Repository == obj.GetName() && !isFinished(pvb.Status.Phase) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pvb)})
		}
	}
	return reqs
}

func (r *PodVolumeBackupReconciler) backupsOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, key := range r.jobs.forPod(obj.GetUID()) {
		reqs = append(reqs, reconcile.Request{NamespacedName: key})
	}
	return reqs
}

// podGone says whether the pod of a running job was deleted or replaced.
func (a *Agent) podGone(ctx context.Context, namespace string, ref v1.PodReference) (bool, string) {
	pod := &corev1.Pod{}
	err := a.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, pod)
	switch {
	case err != nil && client.IgnoreNotFound(err) == nil:
		return true, fmt.Sprintf("pod %s was deleted while its volume was being moved", ref.Name)
	case err != nil:
		return false, ""
	case string(pod.UID) != ref.UID:
		return true, fmt.Sprintf("pod %s was replaced while its volume was being moved", ref.Name)
	case !pod.DeletionTimestamp.IsZero():
		return true, fmt.Sprintf("pod %s was deleted while its volume was being moved", ref.Name)
	}
	return false, ""
}

// backupTags are what the snapshot records to be found again without the cluster
// (identity.Tag*): the policy controller's tags (its namespace's UID among them) and
// what the agent knows of the volume.
func backupTags(pvb *v1.PodVolumeBackup, node string) map[string]string {
	tags := map[string]string{
		identity.TagNamespace:       pvb.Namespace,
		identity.TagSource:          pvb.Spec.SourcePath,
		identity.TagPod:             pvb.Spec.Pod.Name,
		identity.TagVolume:          pvb.Spec.Volume,
		identity.TagBackup:          pvb.Name,
		identity.TagUploader:        string(pvb.Spec.Uploader),
		identity.TagStorageLocation: pvb.Spec.StorageLocation,
		identity.TagNode:            node,
		identity.TagVersion:         version.String(),
	}
	if c := pvb.Spec.ClaimName; c != "" {
		tags[identity.TagClaim] = c
	}
	if p := identity.PolicyOfBackup(pvb); p != "" {
		tags[identity.TagPolicy] = p
	}
	if run := pvb.Labels[v1.LabelRun]; run != "" {
		tags[identity.TagRun] = run
	}
	for k, v := range pvb.Spec.Tags {
		if _, reserved := tags[k]; !reserved {
			tags[k] = v
		}
	}
	return tags
}

func isFinished(phase v1.RunPhase) bool {
	return phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled
}

func now() *metav1.Time {
	t := metav1.Now()
	return &t
}

// storedMessage is the sentence of a completed backup.
func storedMessage(res mover.Result) string {
	msg := fmt.Sprintf("snapshot %s stored: %d files, %d bytes, %d bytes uploaded", res.SnapshotID, res.Progress.TotalFiles, res.Progress.TotalBytes, res.BytesUploaded)
	if res.BytesReused > 0 {
		msg += fmt.Sprintf(", %d bytes of changed large files reused from the parent snapshot", res.BytesReused)
	}
	return msg
}
