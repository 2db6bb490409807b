package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	// again brings back work whose claim failed for a passing reason.
	again chan event.GenericEvent
}

func (r *PodVolumeRestoreReconciler) setup(mgr ctrl.Manager) error {
	r.again = make(chan event.GenericEvent)
	return ctrl.NewControllerManagedBy(mgr).
		WatchesRawSource(source.Channel(r.again, &handler.EnqueueRequestForObject{})).
		Named("podvolumerestore").
		For(&v1.PodVolumeRestore{}).
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(r.restoresOfRepository),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.restoresOfPod)).
		Complete(r)
}

// Reconcile starts the restore of a Pending PodVolumeRestore, cancels one on request or
// when its pod goes away, and fails one that an agent restart left InProgress. Every
// way it ends tells a restore-wait that holds the pod (end).
func (r *PodVolumeRestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvr := &v1.PodVolumeRestore{}
	if err := r.Get(ctx, req.NamespacedName, pvr); err != nil {
		if apierrors.IsNotFound(err) {
			r.jobs.ended(req.NamespacedName) // deleted while it waited out a lock
		}
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
		return ctrl.Result{}, r.end(ctx, pvr, failed(reasonAgentRestart, msgAgentRestarted))
	case v == verdictCanceledEarly:
		return ctrl.Result{}, r.end(ctx, pvr, canceled("canceled before the restore started"))
	}
	if wait := r.jobs.lockWait(key, time.Now()); wait > 0 {
		// It found the repository locked: it waits before it is tried again.
		return ctrl.Result{RequeueAfter: wait}, nil
	}

	err = r.repositoryReady(ctx, pvr.Spec.SourceNamespace, pvr.Spec.Repository)
	var wait errNotReady
	var stalled errStalled
	switch {
	case errors.As(err, &wait):
		return ctrl.Result{RequeueAfter: time.Minute}, r.waiting(ctx, pvr, wait.msg)
	case errors.As(err, &stalled):
		return ctrl.Result{}, r.end(ctx, pvr, failed(reasonFailed, stalled.msg))
	case err != nil:
		// Reading the repository failed: a passing error, retried with backoff.
		return ctrl.Result{}, fmt.Errorf("reading BackupRepository %s: %w", pvr.Spec.Repository, err)
	}
	tgt, err := r.resolveTarget(ctx, pvr.Namespace, pvr.Spec.Pod, pvr.Spec.Volume)
	if tgt.pod != nil {
		if o, ok := readOnlyOutcome(pvr, tgt); ok {
			return ctrl.Result{}, r.end(ctx, pvr, o)
		}
	}
	if msg, ok := r.volumeNotMountedYet(ctx, pvr, err); ok {
		return ctrl.Result{RequeueAfter: 2 * time.Second}, r.waiting(ctx, pvr, msg)
	}
	if msg, ok := r.markerVolumeNotSetUpYet(ctx, pvr, tgt.pod, err); ok {
		return ctrl.Result{RequeueAfter: 2 * time.Second}, r.waiting(ctx, pvr, msg)
	}
	job := mover.Job{Kind: mover.KindRestore, SnapshotID: pvr.Spec.SnapshotID, SourcePath: pvr.Spec.SourcePath,
		Paths: restorePaths(pvr.Spec.Paths), SubPath: string(pvr.Spec.SubPath)}
	work := pvr.DeepCopy()
	r.jobs.start(context.WithoutCancel(ctx), key, types.UID(pvr.Spec.Pod.UID), func(ctx context.Context, stopReason func() string) bool {
		return r.restore(ctx, work, job, stopReason)
	}, func() { r.again <- event.GenericEvent{Object: work} })
	return ctrl.Result{}, nil
}

// volumeNotMountedYet reports, with a message, that the target pod has not started
// and the kubelet has not set up its volume yet (err is what resolving it returned).
// The restore controller creates the restore as soon as the pod is scheduled, a
// moment before the kubelet makes the pod's volume directories; that is a wait, not a
// failure. (The pod watch and the requeue bring the restore back.)
func (r *PodVolumeRestoreReconciler) volumeNotMountedYet(ctx context.Context, pvr *v1.PodVolumeRestore, err error) (string, bool) {
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

// markerVolumeNotSetUpYet reports, with a message, that the kubelet has not made the
// directory of the marker volume of restore-wait, which holds pod for the restore, yet
// (err is what resolving the restored volume returned; only a resolved one is asked
// about). The kubelet sets up a pod's volumes side by side: a restore that ended
// before the marker volume existed could not tell restore-wait, and would fail.
func (r *PodVolumeRestoreReconciler) markerVolumeNotSetUpYet(ctx context.Context, pvr *v1.PodVolumeRestore, pod *corev1.Pod, err error) (string, bool) {
	if err != nil || pod == nil || pod.Status.Phase != corev1.PodPending {
		return "", false
	}
	markers, mErr := restorewait.MarkerVolumeOf(pod, restorewait.RestoreUIDOf(pvr))
	if mErr != nil || markers == "" {
		return "", false
	}
	if _, err := r.volumeOf(ctx, pod, markers); !errors.Is(err, volumepath.ErrNotMounted) {
		return "", false
	}
	return fmt.Sprintf("waiting for the kubelet to set up volume %s of pod %s, in which restore-wait reads how the restore ended", markers, pod.Name), true
}

// reasonReadOnly is the reason of a restore refused because the pod mounts the volume
// read-only.
const reasonReadOnly = "VolumeReadOnly"

// readOnlyOutcome fails a restore into a volume the pod mounts read-only (review M9):
// nothing is written, not even a marker.
func readOnlyOutcome(pvr *v1.PodVolumeRestore, tgt target) (outcome, bool) {
	if tgt.pod == nil {
		return outcome{}, false
	}
	why := readOnlyReason(tgt.pod, pvr.Spec.Volume, tgt.pv)
	if why == "" {
		return outcome{}, false
	}
	return failed(reasonReadOnly, fmt.Sprintf("the volume is mounted read-only (%s), so nothing was restored into volume %s of pod %s",
		why, pvr.Spec.Volume, pvr.Spec.Pod.Name)), true
}

// restore runs in its own goroutine once a slot is free, and leaves the
// PodVolumeRestore in a final phase unless another agent claimed it, or claiming it
// failed (then it returns true: the work is reconciled again).
func (r *PodVolumeRestoreReconciler) restore(ctx context.Context, pvr *v1.PodVolumeRestore, job mover.Job, stopReason func() string) bool {
	log := ctrl.LoggerFrom(ctx).WithValues("podvolumerestore", client.ObjectKeyFromObject(pvr))
	ctx = ctrl.LoggerInto(ctx, log)
	bg := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		r.endOrLog(bg, pvr, canceled("canceled before the restore started"))
		return false
	}
	tgt, err := r.resolveTarget(ctx, pvr.Namespace, pvr.Spec.Pod, pvr.Spec.Volume)
	if tgt.pod != nil {
		if o, ok := readOnlyOutcome(pvr, tgt); ok {
			r.endOrLog(bg, pvr, o)
			return false
		}
	}
	if err != nil {
		r.endOrLog(bg, pvr, failed(reasonFailed, err.Error()))
		return false
	}
	job.Dir, job.Root = tgt.moverDir()
	req := jobcredentials.Request{Kind: jobcredentials.KindRestore, Namespace: pvr.Namespace, Name: pvr.Name, UID: pvr.UID}
	job, err = r.withCredentials(ctx, req, job, func(msg string) {
		if err := r.waiting(bg, pvr, msg); err != nil {
			log.Error(err, "reporting the wait for the repository key")
		}
	})
	switch {
	case ctx.Err() != nil:
		r.endOrLog(bg, pvr, canceled("canceled before the restore started"))
		return false
	case err != nil:
		// Nothing was written; restore-wait, if it holds the pod, says why.
		r.endOrLog(bg, pvr, failed(reasonFailed, err.Error()))
		return false
	}
	if claimed, err := r.claim(bg, pvr); !claimed {
		if err != nil {
			log.Error(err, "claiming the restore; trying again")
			return true
		}
		log.Info("the restore is no longer Pending (claimed by another agent, canceled or deleted); not running it")
		return false
	}
	r.recorder.Eventf(pvr, nil, corev1.EventTypeNormal, "RestoreStarted", "Restore", "restoring snapshot %s into volume %s of pod %s", pvr.Spec.SnapshotID, pvr.Spec.Volume, pvr.Spec.Pod.Name)

	res, err := r.runMover(ctx, job, func(p mover.Progress) {
		if err := patchStatus(bg, r.Client, pvr, func(o *v1.PodVolumeRestore) { o.Status.Progress = toProgress(p) }); err != nil {
			log.Error(err, "publishing progress")
		}
	})
	o := moverOutcome(res, err, stopReason(), "canceled: spec.cancel was set; the volume may hold part of the snapshot",
		restoredMessage(pvr, res.Progress))
	if o.phase == v1.RunPending {
		// The repository stayed locked before anything was written: back in the
		// queue, and restore-wait, if it holds the pod, keeps waiting (no marker).
		r.locked(bg, pvr)
		return true
	}
	r.endOrLog(bg, pvr, o)
	return false
}

// restorePaths is the mover's form of spec.paths.
func restorePaths(paths []v1.RestorePath) []string {
	if len(paths) == 0 {
		return nil
	}
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = string(p)
	}
	return out
}

// restoredMessage says what a Completed restore gave back, and where.
func restoredMessage(pvr *v1.PodVolumeRestore, p mover.Progress) string {
	what := "snapshot " + pvr.Spec.SnapshotID
	if n := len(pvr.Spec.Paths); n > 0 {
		what = fmt.Sprintf("%d paths of snapshot %s", n, pvr.Spec.SnapshotID)
		if n == 1 {
			what = fmt.Sprintf("%s of snapshot %s", pvr.Spec.Paths[0], pvr.Spec.SnapshotID)
		}
	}
	where := ""
	if pvr.Spec.SubPath != "" {
		where = " into " + string(pvr.Spec.SubPath)
	}
	return fmt.Sprintf("%s restored%s: %d files, %d bytes", what, where, p.FilesDone, p.BytesDone)
}

// claim moves the restore from Pending to InProgress, unless another agent did (see
// claimWork).
func (r *PodVolumeRestoreReconciler) claim(ctx context.Context, pvr *v1.PodVolumeRestore) (bool, error) {
	return claimWork(ctx, r.Client, r.apiReader, pvr,
		func(o *v1.PodVolumeRestore) bool { return isClaimable(restoreState(o)) },
		func(o *v1.PodVolumeRestore) {
			o.Status.Phase = v1.RunInProgress
			o.Status.Message = ""
			o.Status.StartTime = now()
			conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonInProgress,
				fmt.Sprintf("restoring snapshot %s into volume %s of pod %s", o.Spec.SnapshotID, o.Spec.Volume, o.Spec.Pod.Name))
		})
}

// locked puts a restore that found its repository locked by maintenance back to
// Pending (backToPendingLocked).
func (r *PodVolumeRestoreReconciler) locked(ctx context.Context, pvr *v1.PodVolumeRestore) {
	backToPendingLocked(ctx, r.Agent, r.jobs, pvr, "restore", func(o *v1.PodVolumeRestore, msg string) {
		o.Status.Phase = v1.RunPending
		o.Status.StartTime = nil
		o.Status.Message = msg
		conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonRepositoryLocked, msg)
	})
}

func (r *PodVolumeRestoreReconciler) endOrLog(ctx context.Context, pvr *v1.PodVolumeRestore, o outcome) {
	if err := r.end(ctx, pvr, o); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "recording the outcome of the restore", "phase", o.phase)
	}
}

// end is the one way a restore ends: it tells restore-wait, when it holds the pod, how
// the restore ended (markRestoreWait; a Completed restore whose marker cannot be
// written fails), then records the final phase (the write is retried) and an event.
func (r *PodVolumeRestoreReconciler) end(ctx context.Context, pvr *v1.PodVolumeRestore, o outcome) error {
	r.jobs.ended(client.ObjectKeyFromObject(pvr))
	o = r.markRestoreWait(ctx, pvr, o)
	var notRestored *v1.NotRestoredEntries
	if o.phase == v1.RunCompleted && o.res != nil {
		notRestored = toNotRestored(o.res.NotRestored)
	}
	err := patchFinalStatus(ctx, r.Client, pvr, func(p *v1.PodVolumeRestore) {
		st := &p.Status
		st.Phase = o.phase
		st.CompletionTime = now()
		if st.StartTime == nil {
			st.StartTime = st.CompletionTime
		}
		if o.res != nil {
			st.Progress = toProgress(o.res.Progress)
		}
		if o.phase == v1.RunCompleted {
			st.NotRestored = notRestored
			st.Message = ""
			conditions.MarkReady(&st.Conditions, p.Generation, o.reason, o.msg)
			return
		}
		st.Message = o.msg
		conditions.MarkStalled(&st.Conditions, p.Generation, o.reason, o.msg)
	})
	if err == nil {
		r.metrics.ended(mover.KindRestore, o.phase)
	}
	eventType := corev1.EventTypeNormal
	if o.phase != v1.RunCompleted {
		eventType = corev1.EventTypeWarning
	}
	r.recorder.Eventf(pvr, nil, eventType, "Restore"+string(o.phase), "Restore", "%s", o.msg)
	if eventType, msg, ok := notRestoredEvent(notRestored); ok {
		r.recorder.Eventf(pvr, nil, eventType, reasonEntriesNotRestored, "Restore", "%s", msg)
	}
	ctrl.LoggerFrom(ctx).Info("restore finished", "podvolumerestore", client.ObjectKeyFromObject(pvr), "phase", o.phase, "message", o.msg)
	return err
}

func (r *PodVolumeRestoreReconciler) waiting(ctx context.Context, pvr *v1.PodVolumeRestore, msg string) error {
	if pvr.Status.Message == msg && pvr.Status.Phase == v1.RunPending {
		return nil
	}
	return patchStatus(ctx, r.Client, pvr, func(o *v1.PodVolumeRestore) {
		o.Status.Phase = v1.RunPending
		o.Status.Message = msg
		conditions.MarkReconciling(&o.Status.Conditions, o.Generation, reasonWaiting, msg)
	})
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
