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
	"github.com/holdfast-dev/holdfast/agent/restorewait"
	"github.com/holdfast-dev/holdfast/agent/volumepath"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
)

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores/status,verbs=get;update;patch

// PodVolumeRestoreReconciler restores snapshots into the pod volumes of its node and
// writes the done-marker that releases the pod's restore-wait init container.
type PodVolumeRestoreReconciler struct {
	*Agent
	jobs *jobs
}

func (r *PodVolumeRestoreReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("podvolumerestore").
		For(&v1.PodVolumeRestore{}).
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(r.restoresOfRepository),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.restoresOfPod)).
		Complete(r)
}

// Reconcile starts the restore of a Pending PodVolumeRestore, cancels one on request or
// when its pod goes away, and fails one that an agent restart left InProgress.
func (r *PodVolumeRestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvr := &v1.PodVolumeRestore{}
	if err := r.Get(ctx, req.NamespacedName, pvr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pvr.Spec.Node != r.opts.NodeName {
		return ctrl.Result{}, nil
	}
	key := req.NamespacedName
	v, err := r.triage(ctx, r.jobs, key, "PodVolumeRestore", restoreState(pvr), func() (workState, error) {
		err := r.apiReader.Get(ctx, key, pvr)
		return restoreState(pvr), err
	})
	switch {
	case err != nil || v == verdictNone:
		return ctrl.Result{}, err
	case v == verdictRestarted:
		return ctrl.Result{}, r.finish(ctx, pvr, v1.RunFailed, reasonAgentRestart, msgAgentRestarted, nil)
	case v == verdictCanceledEarly:
		return ctrl.Result{}, r.finish(ctx, pvr, v1.RunCanceled, reasonCanceled, "canceled before the restore started", nil)
	}

	err = r.repositoryReady(ctx, pvr.Spec.SourceNamespace, pvr.Spec.Repository)
	var wait errNotReady
	switch {
	case errors.As(err, &wait):
		return ctrl.Result{RequeueAfter: time.Minute}, r.waiting(ctx, pvr, wait.msg)
	case err != nil:
		return ctrl.Result{}, r.finish(ctx, pvr, v1.RunFailed, reasonFailed, err.Error(), nil)
	}
	if msg, ok := r.volumeNotMountedYet(ctx, pvr); ok {
		return ctrl.Result{RequeueAfter: 2 * time.Second}, r.waiting(ctx, pvr, msg)
	}
	restoreUID := restoreUIDOf(pvr)
	job := mover.Job{Kind: mover.KindRestore, SnapshotID: pvr.Spec.SnapshotID, SourcePath: pvr.Spec.SourcePath}
	r.jobs.start(context.WithoutCancel(ctx), key, types.UID(pvr.Spec.Pod.UID), func(ctx context.Context, stopReason func() string) {
		r.restore(ctx, pvr.DeepCopy(), job, restoreUID, stopReason)
	})
	return ctrl.Result{}, nil
}

// volumeNotMountedYet reports, with a message, that the target pod has not started
// and the kubelet has not set up its volume yet. The restore controller creates the
// restore as soon as the pod is scheduled, a moment before the kubelet makes the
// pod's volume directories; that is a wait, not a failure. (The pod watch and the
// requeue bring the restore back.)
func (r *PodVolumeRestoreReconciler) volumeNotMountedYet(ctx context.Context, pvr *v1.PodVolumeRestore) (string, bool) {
	_, err := r.resolveTarget(ctx, pvr.Namespace, pvr.Spec.Pod, pvr.Spec.Volume)
	if !errors.Is(err, volumepath.ErrNotMounted) {
		return "", false
	}
	pod := &corev1.Pod{}
	if r.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: pvr.Spec.Pod.Name}, pod) != nil ||
		string(pod.UID) != pvr.Spec.Pod.UID || pod.Status.Phase != corev1.PodPending {
		return "", false
	}
	return fmt.Sprintf("waiting for the kubelet to set up volume %s of pod %s", pvr.Spec.Volume, pvr.Spec.Pod.Name), true
}

// restoreUIDOf is the UID of the VolumeRestore the marker is named after: the
// restore's controller owner. A restore without one was not made by the restore
// controller; the manager refuses it its key.
func restoreUIDOf(pvr *v1.PodVolumeRestore) string {
	if ref := metav1.GetControllerOf(pvr); ref != nil && ref.Kind == "VolumeRestore" && ref.Name == pvr.Spec.VolumeRestore {
		return string(ref.UID)
	}
	return ""
}

func (r *PodVolumeRestoreReconciler) restore(ctx context.Context, pvr *v1.PodVolumeRestore, job mover.Job, restoreUID string, stopReason func() string) {
	log := ctrl.LoggerFrom(ctx).WithValues("podvolumerestore", client.ObjectKeyFromObject(pvr))
	ctx = ctrl.LoggerInto(ctx, log)
	bg := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		r.finishOrLog(bg, pvr, "", restoreUID, v1.RunCanceled, reasonCanceled, "canceled before the restore started", nil)
		return
	}
	tgt, err := r.resolveTarget(ctx, pvr.Namespace, pvr.Spec.Pod, pvr.Spec.Volume)
	if err != nil {
		r.finishOrLog(bg, pvr, "", restoreUID, v1.RunFailed, reasonFailed, err.Error(), nil)
		return
	}
	job.Dir = tgt.dir
	// Only a pod held by restore-wait gets a marker: in a running pod's volume (a
	// data-only restore) nobody would remove it.
	markerDir := ""
	if restoreUID != "" && restorewait.Holds(tgt.pod, restoreUID) {
		markerDir = tgt.dir
	}
	req := jobcredentials.Request{Kind: jobcredentials.KindRestore, Namespace: pvr.Namespace, Name: pvr.Name, UID: pvr.UID}
	job, err = r.withCredentials(ctx, req, job, func(msg string) {
		if err := r.waiting(bg, pvr, msg); err != nil {
			log.Error(err, "reporting the wait for the repository key")
		}
	})
	switch {
	case ctx.Err() != nil:
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunCanceled, reasonCanceled, "canceled before the restore started", nil)
		return
	case err != nil:
		// Nothing was written; restore-wait, if it holds the pod, says why.
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunFailed, reasonFailed, err.Error(), nil)
		return
	}
	if err := r.patchStatus(bg, pvr, func(st *v1.PodVolumeRestoreStatus) {
		st.Phase = v1.RunInProgress
		st.Message = ""
		st.StartTime = now()
		conditions.MarkReconciling(&st.Conditions, pvr.Generation, reasonInProgress,
			fmt.Sprintf("restoring snapshot %s into volume %s of pod %s", pvr.Spec.SnapshotID, pvr.Spec.Volume, pvr.Spec.Pod.Name))
	}); err != nil {
		log.Error(err, "marking the restore InProgress")
	}
	r.recorder.Eventf(pvr, nil, corev1.EventTypeNormal, "RestoreStarted", "Restore", "restoring snapshot %s into volume %s of pod %s", pvr.Spec.SnapshotID, pvr.Spec.Volume, pvr.Spec.Pod.Name)

	res, err := r.runMover(ctx, job, func(p mover.Progress) {
		if err := r.patchStatus(bg, pvr, func(st *v1.PodVolumeRestoreStatus) { st.Progress = toProgress(p) }); err != nil {
			log.Error(err, "publishing progress")
		}
	})
	switch {
	case err != nil:
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunFailed, reasonFailed, err.Error(), &res)
	case res.Canceled && stopReason() != "":
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunFailed, reasonFailed, stopReason(), &res)
	case res.Canceled:
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunCanceled, reasonCanceled, "canceled: spec.cancel was set; the volume may hold part of the snapshot", &res)
	case res.Error != "":
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunFailed, reasonFailed, res.Error, &res)
	default:
		r.finishOrLog(bg, pvr, markerDir, restoreUID, v1.RunCompleted, conditions.ReasonSucceeded,
			fmt.Sprintf("snapshot %s restored: %d files, %d bytes", pvr.Spec.SnapshotID, res.Progress.FilesDone, res.Progress.BytesDone), &res)
	}
}

func (r *PodVolumeRestoreReconciler) finishOrLog(ctx context.Context, pvr *v1.PodVolumeRestore, dir, restoreUID string, phase v1.RunPhase, reason, msg string, res *mover.Result) {
	if dir != "" {
		if err := r.writeMarker(ctx, pvr, dir, restoreUID, phase, msg); err != nil {
			phase, reason, msg = v1.RunFailed, reasonFailed, "the data was restored but the done-marker could not be written: "+err.Error()
		}
	}
	if err := r.finish(ctx, pvr, phase, reason, msg, res); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "recording the outcome of the restore", "phase", phase)
	}
}

func (r *PodVolumeRestoreReconciler) finish(ctx context.Context, pvr *v1.PodVolumeRestore, phase v1.RunPhase, reason, msg string, res *mover.Result) error {
	err := r.patchStatus(ctx, pvr, func(st *v1.PodVolumeRestoreStatus) {
		st.Phase = phase
		st.CompletionTime = now()
		if st.StartTime == nil {
			st.StartTime = st.CompletionTime
		}
		if res != nil {
			st.Progress = toProgress(res.Progress)
		}
		if phase == v1.RunCompleted {
			st.Message = ""
			conditions.MarkReady(&st.Conditions, pvr.Generation, reason, msg)
			return
		}
		st.Message = msg
		conditions.MarkStalled(&st.Conditions, pvr.Generation, reason, msg)
	})
	eventType := corev1.EventTypeNormal
	if phase != v1.RunCompleted {
		eventType = corev1.EventTypeWarning
	}
	r.recorder.Eventf(pvr, nil, eventType, "Restore"+string(phase), "Restore", "%s", msg)
	ctrl.LoggerFrom(ctx).Info("restore finished", "podvolumerestore", client.ObjectKeyFromObject(pvr), "phase", phase, "message", msg)
	return err
}

func (r *PodVolumeRestoreReconciler) waiting(ctx context.Context, pvr *v1.PodVolumeRestore, msg string) error {
	if pvr.Status.Message == msg && pvr.Status.Phase == v1.RunPending {
		return nil
	}
	return r.patchStatus(ctx, pvr, func(st *v1.PodVolumeRestoreStatus) {
		st.Phase = v1.RunPending
		st.Message = msg
		conditions.MarkReconciling(&st.Conditions, pvr.Generation, reasonWaiting, msg)
	})
}

func (r *PodVolumeRestoreReconciler) patchStatus(ctx context.Context, pvr *v1.PodVolumeRestore, mutate func(*v1.PodVolumeRestoreStatus)) error {
	base := pvr.DeepCopy()
	mutate(&pvr.Status)
	return r.Status().Patch(ctx, pvr, client.MergeFrom(base))
}

func (r *PodVolumeRestoreReconciler) restoresOfRepository(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1.PodVolumeRestoreList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, pvr := range list.Items {
		if pvr.Spec.Repository == obj.GetName() && pvr.Spec.SourceNamespace == obj.GetNamespace() && !isFinished(pvr.Status.Phase) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pvr)})
		}
	}
	return reqs
}

func (r *PodVolumeRestoreReconciler) restoresOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, key := range r.jobs.forPod(obj.GetUID()) {
		reqs = append(reqs, reconcile.Request{NamespacedName: key})
	}
	return reqs
}
