package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
}

func (r *PodVolumeBackupReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
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
		return ctrl.Result{}, r.finish(ctx, pvb, v1.RunFailed, reasonAgentRestart, msgAgentRestarted, nil)
	case v == verdictCanceledEarly:
		return ctrl.Result{}, r.finish(ctx, pvb, v1.RunCanceled, reasonCanceled, "canceled before the backup started", nil)
	}

	err = r.repositoryReady(ctx, pvb.Namespace, pvb.Spec.Repository)
	var wait errNotReady
	switch {
	case errors.As(err, &wait):
		// The repository controller is still creating the repository: it is watched.
		return ctrl.Result{RequeueAfter: time.Minute}, r.waiting(ctx, pvb, wait.msg)
	case err != nil:
		return ctrl.Result{}, r.finish(ctx, pvb, v1.RunFailed, reasonFailed, err.Error(), nil)
	}
	job := mover.Job{Kind: mover.KindBackup, SourcePath: pvb.Spec.SourcePath, Tags: backupTags(pvb, r.opts.NodeName), Parent: pvb.Spec.ParentSnapshotID}
	if job.Parent == "" {
		// The policy controller found no earlier backup of this source that this
		// namespace may continue.
		job.Parent = repository.NoParent
	}
	r.jobs.start(context.WithoutCancel(ctx), key, types.UID(pvb.Spec.Pod.UID), func(ctx context.Context, stopReason func() string) {
		r.backup(ctx, pvb.DeepCopy(), job, stopReason)
	})
	return ctrl.Result{}, nil
}

// backup runs in its own goroutine once a slot is free, and always leaves the
// PodVolumeBackup in a final phase.
func (r *PodVolumeBackupReconciler) backup(ctx context.Context, pvb *v1.PodVolumeBackup, job mover.Job, stopReason func() string) {
	log := ctrl.LoggerFrom(ctx).WithValues("podvolumebackup", client.ObjectKeyFromObject(pvb))
	ctx = ctrl.LoggerInto(ctx, log)
	// Status writes must land even after the job's context is canceled.
	bg := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		r.finishOrLog(bg, pvb, v1.RunCanceled, reasonCanceled, "canceled before the backup started", nil)
		return
	}
	tgt, err := r.resolveTarget(ctx, pvb.Namespace, pvb.Spec.Pod, pvb.Spec.Volume)
	if err != nil {
		r.finishOrLog(bg, pvb, v1.RunFailed, reasonFailed, err.Error(), nil)
		return
	}
	job.Dir = tgt.dir
	req := jobcredentials.Request{Kind: jobcredentials.KindBackup, Namespace: pvb.Namespace, Name: pvb.Name, UID: pvb.UID}
	job, err = r.withCredentials(ctx, req, job, func(msg string) {
		if err := r.waiting(bg, pvb, msg); err != nil {
			log.Error(err, "reporting the wait for the repository key")
		}
	})
	switch {
	case ctx.Err() != nil:
		r.finishOrLog(bg, pvb, v1.RunCanceled, reasonCanceled, "canceled before the backup started", nil)
		return
	case err != nil:
		r.finishOrLog(bg, pvb, v1.RunFailed, reasonFailed, err.Error(), nil)
		return
	}
	if err := r.patchStatus(bg, pvb, func(st *v1.PodVolumeBackupStatus) {
		st.Phase = v1.RunInProgress
		st.Message = ""
		st.StartTime = now()
		conditions.MarkReconciling(&st.Conditions, pvb.Generation, reasonInProgress,
			fmt.Sprintf("backing up volume %s of pod %s", pvb.Spec.Volume, pvb.Spec.Pod.Name))
	}); err != nil {
		log.Error(err, "marking the backup InProgress")
	}
	r.recorder.Eventf(pvb, nil, corev1.EventTypeNormal, "BackupStarted", "Backup", "backing up volume %s of pod %s on %s", pvb.Spec.Volume, pvb.Spec.Pod.Name, r.opts.NodeName)

	res, err := r.runMover(ctx, job, func(p mover.Progress) {
		if err := r.patchStatus(bg, pvb, func(st *v1.PodVolumeBackupStatus) { st.Progress = toProgress(p) }); err != nil {
			log.Error(err, "publishing progress")
		}
	})
	switch {
	case err != nil:
		r.finishOrLog(bg, pvb, v1.RunFailed, reasonFailed, err.Error(), &res)
	case res.Canceled && stopReason() != "":
		r.finishOrLog(bg, pvb, v1.RunFailed, reasonFailed, stopReason(), &res)
	case res.Canceled:
		r.finishOrLog(bg, pvb, v1.RunCanceled, reasonCanceled, "canceled: spec.cancel was set; earlier snapshots are untouched", &res)
	case res.Error != "":
		r.finishOrLog(bg, pvb, v1.RunFailed, reasonFailed, res.Error, &res)
	default:
		r.finishOrLog(bg, pvb, v1.RunCompleted, conditions.ReasonSucceeded,
			fmt.Sprintf("snapshot %s stored: %d files, %d bytes, %d bytes uploaded", res.SnapshotID, res.Progress.TotalFiles, res.Progress.TotalBytes, res.BytesUploaded), &res)
	}
}

func (r *PodVolumeBackupReconciler) finishOrLog(ctx context.Context, pvb *v1.PodVolumeBackup, phase v1.RunPhase, reason, msg string, res *mover.Result) {
	if err := r.finish(ctx, pvb, phase, reason, msg, res); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "recording the outcome of the backup", "phase", phase)
	}
}

// finish records a final phase with its one-sentence message and an event.
func (r *PodVolumeBackupReconciler) finish(ctx context.Context, pvb *v1.PodVolumeBackup, phase v1.RunPhase, reason, msg string, res *mover.Result) error {
	err := r.patchStatus(ctx, pvb, func(st *v1.PodVolumeBackupStatus) {
		st.Phase = phase
		st.CompletionTime = now()
		if st.StartTime == nil {
			st.StartTime = st.CompletionTime
		}
		if res != nil {
			st.Progress = toProgress(res.Progress)
			st.SnapshotID = res.SnapshotID
			st.ParentSnapshotID = res.ParentSnapshotID
			st.BytesUploaded = res.BytesUploaded
		}
		if phase == v1.RunCompleted {
			st.Message = ""
			conditions.MarkReady(&st.Conditions, pvb.Generation, reason, msg)
			return
		}
		st.Message = msg
		conditions.MarkStalled(&st.Conditions, pvb.Generation, reason, msg)
	})
	eventType := corev1.EventTypeNormal
	if phase != v1.RunCompleted {
		eventType = corev1.EventTypeWarning
	}
	r.recorder.Eventf(pvb, nil, eventType, "Backup"+string(phase), "Backup", "%s", msg)
	ctrl.LoggerFrom(ctx).Info("backup finished", "podvolumebackup", client.ObjectKeyFromObject(pvb), "phase", phase, "message", msg)
	return err
}

func (r *PodVolumeBackupReconciler) waiting(ctx context.Context, pvb *v1.PodVolumeBackup, msg string) error {
	if pvb.Status.Message == msg && pvb.Status.Phase == v1.RunPending {
		return nil
	}
	return r.patchStatus(ctx, pvb, func(st *v1.PodVolumeBackupStatus) {
		st.Phase = v1.RunPending
		st.Message = msg
		conditions.MarkReconciling(&st.Conditions, pvb.Generation, reasonWaiting, msg)
	})
}

// patchStatus applies mutate to a fresh copy of the status and merge-patches it.
func (r *PodVolumeBackupReconciler) patchStatus(ctx context.Context, pvb *v1.PodVolumeBackup, mutate func(*v1.PodVolumeBackupStatus)) error {
	base := pvb.DeepCopy()
	mutate(&pvb.Status)
	return r.Status().Patch(ctx, pvb, client.MergeFrom(base))
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
