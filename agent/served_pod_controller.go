package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	"github.com/holdfast-dev/holdfast/agent/volumepath"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// ServedPodReconciler releases the restore-wait of a pod of this node whose claim
// another pod's PodVolumeRestore of the same restore restores (the restore controller
// restores a claim once and lists the other pods as served by it), when the end of
// that restore did not: the agent that ended it wrote the markers of the pods that
// existed then (markRestoreWait), so a pod created after it (a replica added while
// other volumes of the restore still run, a pod created again), or a pod waiting
// when the manager, not an agent, ended it (its node went away), would wait until
// restore-wait's deadline while the restore reports it restored.
//
// It writes the marker the end would have written (a done-marker for Completed, the
// failure marker with the restore's sentence otherwise) into the pod's marker volume,
// at once (the marker stays there), or, for a pod admitted before the marker volume,
// through the pod's own volume directory, as only an agent may. Never where the marker
// is, never for a restore-wait that finished, never while the claim's restore runs,
// never from another restore's. In a volume, since restore-wait removes its marker a
// moment before it ends and the kubelet reports that a moment later, it writes only
// when the marker is still missing markerSettle after it first found it missing and a
// fresh read shows restore-wait still waiting. It keeps looking until restore-wait
// takes a marker written into a volume:
// a pod that comes later and whose restore-wait runs as another user has the claim's
// .holdfast made again, without the markers in it (restorewait.Marked).
type ServedPodReconciler struct {
	*Agent
	mu sync.Mutex
	// unmarked says, by pod, since when each of its waits (claimWait.key) on an
	// ended restore has been found without its marker.
	unmarked map[types.NamespacedName]map[string]time.Time
}

// markerSettle is how long a marker must stay missing before the agent writes it:
// longer than the kubelet takes to report that a restore-wait which just removed its
// marker ended.
const markerSettle = 10 * time.Second

func (r *ServedPodReconciler) setup(mgr ctrl.Manager) error {
	r.unmarked = map[types.NamespacedName]map[string]time.Time{}
	return ctrl.NewControllerManagedBy(mgr).
		Named("servedpod").
		For(&corev1.Pod{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			pod, ok := o.(*corev1.Pod)
			return ok && hasRestoreWait(pod)
		}))).
		Complete(r)
}

// claimWait is one volume restore-wait waits for that is a claim: what a served pod
// waits on.
type claimWait struct {
	restoreUID, container, volume, claim string
}

func (w claimWait) key(pod *corev1.Pod) string {
	return string(pod.UID) + "/" + w.restoreUID + "/" + w.volume
}

// Reconcile looks at a Pending pod of this node that restore-wait holds, and releases
// each claim it waits for whose restore, of another pod, ended (release). While such
// a restore has not ended, or has not been made yet, it looks again after
// ServedClaimRecheck: that restore's end normally releases the pod, and this agent
// cannot watch a restore that runs on another node.
func (r *ServedPodReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		r.forget(req.NamespacedName, nil)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	waits := claimWaits(pod)
	if len(waits) == 0 || pod.Spec.NodeName != r.opts.NodeName || !pod.DeletionTimestamp.IsZero() || pod.Status.Phase != corev1.PodPending {
		r.forget(req.NamespacedName, nil)
		return ctrl.Result{}, nil
	}
	restores, err := r.restoresOf(ctx, pod)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the PodVolumeRestores of the restores that hold pod %s: %w", req, err)
	}
	var again time.Duration
	later := func(d time.Duration) {
		if d > 0 && (again == 0 || d < again) {
			again = d
		}
	}
	keep := map[string]bool{}
	var errs []error
	for _, w := range waits {
		pvr := claimRestoreOf(restores, w)
		switch {
		case pvr != nil && pvr.Spec.Pod.UID == string(pod.UID):
			// The pod's own restore: its end releases it.
		case pvr == nil || !isFinished(pvr.Status.Phase):
			later(r.opts.ServedClaimRecheck)
		default:
			keep[w.key(pod)] = true // release keeps its own record
			d, err := r.release(ctx, pod, w, pvr)
			later(d)
			errs = append(errs, err)
		}
	}
	r.forget(req.NamespacedName, keep)
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err // retried with backoff
	}
	return ctrl.Result{RequeueAfter: again}, nil
}

// release writes, unless it is there, the marker that the end of pvr (which restored
// the claim of w) gives the pod's restore-wait for w: done when pvr Completed, failed
// with pvr's sentence otherwise. It returns when to look again: while the volume is
// not mounted yet, while the marker has not been missing for markerSettle, and while
// a done-marker waits for restore-wait to take it.
func (r *ServedPodReconciler) release(ctx context.Context, pod *corev1.Pod, w claimWait, pvr *v1.PodVolumeRestore) (again time.Duration, err error) {
	log := ctrl.LoggerFrom(ctx).WithValues("pod", pod.Name, "claim", w.claim, "podvolumerestore", pvr.Name)
	settling := false
	defer func() {
		if !settling {
			r.unsettle(pod, w)
		}
	}()
	if markers, err := restorewait.MarkerVolumeOf(pod, w.restoreUID); err != nil || markers != "" {
		return r.releaseThroughMarkerVolume(ctx, pod, w, pvr, markers, err)
	}
	if _, err := r.volumeOf(ctx, pod, w.volume); errors.Is(err, volumepath.ErrNotMounted) {
		// The kubelet sets it up; nothing waits on it yet. It reports the init
		// container started right after, which brings the pod back.
		return r.opts.ServedClaimRecheck, nil
	}
	failure := endedWith(pvr)
	volumes := []string{w.volume}
	if failure != "" {
		// Where the claim cannot take it, one failure marker in any volume this
		// restore-wait waits for stops it (as markRestoreWait does).
		volumes = append(volumes, restoreWaitVolumes(pod, w.restoreUID, w.volume)...)
	}
	for i, volume := range volumes {
		done, failed, err := r.marked(ctx, pod, volume, w.restoreUID)
		switch {
		case err != nil:
			return 0, err
		case failed:
			return 0, nil // told already; restore-wait leaves it there
		case i == 0 && done:
			// Told already. Looked at again until restore-wait takes it: a pod that
			// comes later whose restore-wait runs as another user has .holdfast made
			// again, without this marker (restorewait.Marked).
			return r.opts.ServedClaimRecheck, nil
		}
	}
	if wait := r.settle(pod, w); wait > 0 {
		settling = true
		return wait, nil
	}
	// The cache may be behind a restore-wait that just ended.
	fresh := &corev1.Pod{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(pod), fresh); err != nil {
		return 0, client.IgnoreNotFound(err)
	}
	if fresh.UID != pod.UID || restoreWaitEnded(fresh, w.container) {
		return 0, nil
	}

	var errs []error
	for _, volume := range volumes {
		err := r.markPod(ctx, pod, volume, w.restoreUID, failure)
		if err == nil {
			r.releasedEvent(pod, w, pvr, failure)
			log.Info("released the restore-wait of a pod whose claim another pod's restore restored", "phase", pvr.Status.Phase, "volume", volume)
			if failure != "" {
				return 0, nil
			}
			return r.opts.ServedClaimRecheck, nil // until restore-wait takes it, as above
		}
		errs = append(errs, err)
	}
	err = errors.Join(errs...)
	r.recorder.Eventf(pod, pvr, corev1.EventTypeWarning, reasonNotReleased, "Restore",
		"claim %s was restored by PodVolumeRestore %s (%s), but the restore-wait of this pod could not be told: %v", w.claim, pvr.Name, pvr.Status.Phase, err)
	log.Error(err, "telling the restore-wait of a pod whose claim another pod's restore restored how it ended", "phase", pvr.Status.Phase)
	return 0, nil // a read-only mount, or a volume that is not there: not passing
}

// releaseThroughMarkerVolume is release for a pod whose restore-wait reads its
// markers in its marker volume, markers (markersErr when the pod's marker volume is
// not one the agent may write): the marker of w's volume goes there, once. It stays
// there (restore-wait does not remove it), so it is written when it is not there,
// without waiting for it to stay missing, and the claim gets nothing.
func (r *ServedPodReconciler) releaseThroughMarkerVolume(ctx context.Context, pod *corev1.Pod, w claimWait, pvr *v1.PodVolumeRestore, markers string, markersErr error) (time.Duration, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("pod", pod.Name, "claim", w.claim, "podvolumerestore", pvr.Name)
	failure := endedWith(pvr)
	err := markersErr
	if err == nil {
		var tgt target
		tgt, err = r.volumeOf(ctx, pod, markers)
		if errors.Is(err, volumepath.ErrNotMounted) {
			return r.opts.ServedClaimRecheck, nil // the kubelet sets it up
		}
		if err == nil {
			done, failed, merr := restorewait.VolumeMarked(tgt.dir, w.restoreUID, w.volume)
			if merr != nil || done || failed {
				return 0, merr // told already
			}
			err = restorewait.WriteVolumeMarker(tgt.dir, w.restoreUID, w.volume, failure)
		}
	}
	if err != nil {
		r.recorder.Eventf(pod, pvr, corev1.EventTypeWarning, reasonNotReleased, "Restore",
			"claim %s was restored by PodVolumeRestore %s (%s), but the restore-wait of this pod could not be told: %v", w.claim, pvr.Name, pvr.Status.Phase, err)
		log.Error(err, "telling the restore-wait of a pod whose claim another pod's restore restored how it ended", "phase", pvr.Status.Phase)
		return 0, nil
	}
	r.releasedEvent(pod, w, pvr, failure)
	log.Info("released the restore-wait of a pod whose claim another pod's restore restored", "phase", pvr.Status.Phase, "volume", w.volume)
	return 0, nil
}

// endedWith is the reason the failure marker of an ended restore holds, "" when it
// Completed.
func endedWith(pvr *v1.PodVolumeRestore) string {
	if pvr.Status.Phase == v1.RunCompleted {
		return ""
	}
	if pvr.Status.Message != "" {
		return pvr.Status.Message
	}
	return "the restore ended " + string(pvr.Status.Phase)
}

// marked says which marker of restoreUID the pod's restore-wait has in volume; none
// when the volume cannot be found on this node.
func (r *ServedPodReconciler) marked(ctx context.Context, pod *corev1.Pod, volume, restoreUID string) (done, failed bool, err error) {
	tgt, err := r.volumeOf(ctx, pod, volume)
	if err != nil {
		return false, false, nil // markPod says why
	}
	done, failed, _, err = restorewait.Marked(tgt.dir, restoreUID, restorewait.MarkerPodUID(pod, restoreUID), restorewait.RunsAs(pod, restoreUID))
	return done, failed, err
}

// Reasons of the events on a pod the agent releases (or cannot) for another pod's
// restore of its claim.
const (
	reasonReleased    = "SharedClaimRestored"
	reasonNotReleased = "SharedClaimNotReleased"
	reasonFailedClaim = "SharedClaimRestoreFailed"
)

func (r *ServedPodReconciler) releasedEvent(pod *corev1.Pod, w claimWait, pvr *v1.PodVolumeRestore, failure string) {
	if failure == "" {
		r.recorder.Eventf(pod, pvr, corev1.EventTypeNormal, reasonReleased, "Restore",
			"claim %s was restored by PodVolumeRestore %s for pod %s before this pod started; restore-wait released", w.claim, pvr.Name, pvr.Spec.Pod.Name)
		return
	}
	r.recorder.Eventf(pod, pvr, corev1.EventTypeWarning, reasonFailedClaim, "Restore",
		"the restore of claim %s by PodVolumeRestore %s ended %s: %s", w.claim, pvr.Name, pvr.Status.Phase, failure)
}

// settle records that the marker of w is missing and returns how long until it has
// been missing for markerSettle (0: write it).
func (r *ServedPodReconciler) settle(pod *corev1.Pod, w claimWait) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := client.ObjectKeyFromObject(pod)
	if r.unmarked[key] == nil {
		r.unmarked[key] = map[string]time.Time{}
	}
	first, ok := r.unmarked[key][w.key(pod)]
	if !ok {
		r.unmarked[key][w.key(pod)] = time.Now()
		return markerSettle
	}
	return max(0, markerSettle-time.Since(first))
}

// unsettle drops what settle recorded for w.
func (r *ServedPodReconciler) unsettle(pod *corev1.Pod, w claimWait) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := client.ObjectKeyFromObject(pod)
	delete(r.unmarked[key], w.key(pod))
	if len(r.unmarked[key]) == 0 {
		delete(r.unmarked, key)
	}
}

// forget drops what settle recorded for the pod, but for the waits in keep.
func (r *ServedPodReconciler) forget(key types.NamespacedName, keep map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.unmarked[key] {
		if !keep[k] {
			delete(r.unmarked[key], k)
		}
	}
	if len(r.unmarked[key]) == 0 {
		delete(r.unmarked, key)
	}
}

// markPod writes into volume of pod (on this node) the marker of the pod's own
// restore-wait for restoreUID, keeping the .holdfast there, with the markers of other
// pods on the claim, when that restore-wait can read it (restorewait.Marked). A volume
// the pod mounts read-only is not written.
func (a *Agent) markPod(ctx context.Context, pod *corev1.Pod, volume, restoreUID, failure string) error {
	tgt, err := a.volumeOf(ctx, pod, volume)
	if tgt.pod != nil {
		if why := readOnlyReason(pod, volume, tgt.pv); why != "" {
			return fmt.Errorf("volume %s is mounted read-only (%s)", volume, why)
		}
	}
	if err != nil {
		return err
	}
	podUID := restorewait.MarkerPodUID(pod, restoreUID)
	_, _, owner, err := restorewait.Marked(tgt.dir, restoreUID, podUID, restorewait.RunsAs(pod, restoreUID))
	if err != nil {
		return err
	}
	return restorewait.WriteMarkerFor(tgt.dir, restoreUID, podUID, owner, failure)
}

// restoresOf lists, from the API server (the restore of a claim may run on another
// node, which this agent does not cache), the PodVolumeRestores of the restores the
// pod's annotation names, or of its namespace when it names none.
func (r *ServedPodReconciler) restoresOf(ctx context.Context, pod *corev1.Pod) ([]v1.PodVolumeRestore, error) {
	opts := []client.ListOption{client.InNamespace(pod.Namespace)}
	var names []string
	for name := range restorewait.WaitedVolumes(pod) {
		names = append(names, identity.LabelValue(name))
	}
	if len(names) > 0 {
		req, err := labels.NewRequirement(v1.LabelRestore, selection.In, names)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*req)})
	}
	var list v1.PodVolumeRestoreList
	if err := r.apiReader.List(ctx, &list, opts...); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// claimRestoreOf is the PodVolumeRestore, among restores, that restores w's claim for
// w's restore (by the UID of its controlling VolumeRestore, not by name: a restore of
// the same name made again is another restore), nil when there is none. Of two, the
// restore controller counts the first by name.
func claimRestoreOf(restores []v1.PodVolumeRestore, w claimWait) *v1.PodVolumeRestore {
	var out *v1.PodVolumeRestore
	for i := range restores {
		p := &restores[i]
		if restorewait.RestoreUIDOf(p) != w.restoreUID || p.Annotations[restorewait.AnnotationClaim] != w.claim {
			continue
		}
		if out == nil || p.Name < out.Name {
			out = p
		}
	}
	return out
}

// claimWaits lists the claims the pod's restore-wait containers that have not
// finished wait for.
func claimWaits(pod *corev1.Pod) []claimWait {
	var out []claimWait
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		uid := restorewait.UIDOf(c)
		if uid == "" || restoreWaitEnded(pod, c.Name) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if claim := claimOf(pod, m.Name); claim != "" {
				out = append(out, claimWait{restoreUID: uid, container: c.Name, volume: m.Name, claim: claim})
			}
		}
	}
	return out
}

// restoreWaitEnded says whether the init container named container ended well: it
// found its markers and removed them, and will not wait again.
func restoreWaitEnded(pod *corev1.Pod, container string) bool {
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == container {
			return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		}
	}
	return false
}

// hasRestoreWait says whether any init container of the pod is restore-wait.
func hasRestoreWait(pod *corev1.Pod) bool {
	for i := range pod.Spec.InitContainers {
		if restorewait.IsContainer(&pod.Spec.InitContainers[i]) {
			return true
		}
	}
	return false
}
