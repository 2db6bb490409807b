package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// markRestoreWait tells the pod's restore-wait how the restore ended, whatever ended
// it (review M1: an agent restart, a cancel, a Stalled repository, a refused key, a
// volume that cannot be found or is read-only, a failed mover): the done-marker when
// the data is in place, the failure marker holding the reason otherwise. Only a pod
// held by restore-wait for this restore gets one: nobody else would read it.
//
// A pod the webhook gave a marker volume gets its marker there (<restore uid>.<volume>,
// restorewait.WriteVolumeMarker): restore-wait reads nothing of the restored volume,
// whatever its root's owner and mode, and the volume gets nothing of the marker. A pod
// admitted before the marker volume gets .holdfast/<restore uid>[.<pod uid>] at the
// restored volume's root, as it used to (restorewait.WriteMarkerFor), or, for a
// failure that volume cannot take (not found on the node, mounted read-only), in
// another volume the same restore-wait waits for: restore-wait fails at the first
// failure marker it finds. A Completed restore whose done-marker cannot be written is
// failed.
//
// A claim that several pods of the restore mount is restored once, by the
// PodVolumeRestore of one of them (issue 15 item 4): every other pod that restore-wait
// holds for this restore and that mounts the claim gets its marker too. With a marker
// volume, that of a pod on this node is written here, and that of a pod on another
// node by the agent of that node (ServedPodReconciler), which also releases pods that
// come to the claim later; without one, it goes into the claim, named after the pod
// (restorewait.MarkerName), so that each restore-wait removes only its own.
func (r *PodVolumeRestoreReconciler) markRestoreWait(ctx context.Context, pvr *v1.PodVolumeRestore, o outcome) outcome {
	restoreUID := restorewait.RestoreUIDOf(pvr)
	if restoreUID == "" {
		return o
	}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: pvr.Spec.Pod.Name}, pod); err != nil ||
		string(pod.UID) != pvr.Spec.Pod.UID {
		// Gone or replaced: its volume cannot be found, nobody waits on it.
		return o
	}
	failure := ""
	if o.phase != v1.RunCompleted {
		failure = o.msg
		if failure == "" {
			failure = "the restore ended " + string(o.phase)
		}
	}
	log := ctrl.LoggerFrom(ctx)
	var inClaim []sharer // sharers whose markers go into the claim
	for _, h := range r.podsSharingClaim(ctx, pod, pvr.Spec.Volume, restoreUID) {
		markers, err := restorewait.MarkerVolumeOf(h.pod, restoreUID)
		switch {
		case err == nil && markers == "":
			inClaim = append(inClaim, h)
		case err == nil && h.pod.Spec.NodeName != r.opts.NodeName:
			// Its node's agent releases it (ServedPodReconciler).
		case err == nil:
			err = r.writeVolumeMarker(ctx, h.pod, markers, h.volume, restoreUID, failure)
		}
		if err != nil {
			log.Error(err, "telling the restore-wait of a pod sharing the claim how the restore ended", "pod", h.pod.Name, "phase", o.phase)
		}
	}
	markers, markersErr := restorewait.MarkerVolumeOf(pod, restoreUID)
	holds := restorewait.Holds(pod, restoreUID)
	// One .holdfast for every pod on the claim that reads it there: owned by their
	// restore-wait's user when they agree, else root's (restorewait.markerDir would
	// replace it, and the markers in it, for each pod in turn).
	var owners []restorewait.Owner
	if holds && markers == "" && markersErr == nil {
		owners = append(owners, restorewait.RunsAs(pod, restoreUID))
	}
	for _, h := range inClaim {
		owners = append(owners, restorewait.RunsAs(h.pod, restoreUID))
	}
	owner := restorewait.UnknownOwner
	if len(owners) > 0 {
		owner = owners[0]
	}
	for _, o := range owners {
		if o != owner {
			owner = restorewait.UnknownOwner
		}
	}
	for _, h := range inClaim {
		if err := r.writeMarker(ctx, pod, pvr.Spec.Volume, h.pod, h.volume, restoreUID, owner, failure); err != nil {
			log.Error(err, "telling the restore-wait of a pod sharing the claim how the restore ended", "pod", h.pod.Name, "phase", o.phase)
		}
	}
	if !holds {
		return o // nobody in this pod waits for a marker
	}
	var err error
	switch {
	case markersErr != nil:
		err = markersErr
	case markers != "":
		err = r.writeVolumeMarker(ctx, pod, markers, pvr.Spec.Volume, restoreUID, failure)
	default:
		err = r.markInVolumes(ctx, pod, pvr.Spec.Volume, restoreUID, owner, failure)
	}
	if err == nil {
		return o
	}
	log.Error(err, "telling restore-wait how the restore ended", "pod", pod.Name, "phase", o.phase)
	if o.phase == v1.RunCompleted {
		return outcome{phase: v1.RunFailed, reason: reasonFailed, res: o.res,
			msg: "the data was restored but the done-marker could not be written: " + err.Error()}
	}
	return o
}

// markInVolumes writes the marker of the pod's restore-wait for restoreUID, made
// before the marker volume, into .holdfast of the restored volume (with owner, that of
// every pod on the claim); a failure marker that volume cannot take goes into another
// volume the restore-wait waits for.
func (r *PodVolumeRestoreReconciler) markInVolumes(ctx context.Context, pod *corev1.Pod, volume, restoreUID string, owner restorewait.Owner, failure string) error {
	volumes := []string{volume}
	if failure != "" {
		volumes = append(volumes, restoreWaitVolumes(pod, restoreUID, volume)...)
	}
	var errs []error
	for i, v := range volumes {
		volOwner := owner
		if i > 0 {
			volOwner = restorewait.RunsAs(pod, restoreUID) // a volume of this pod only
		}
		err := r.writeMarker(ctx, pod, v, pod, v, restoreUID, volOwner, failure)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writeVolumeMarker writes the marker of the restore restoreUID of the pod's volume
// named volume into the pod's marker volume named markers, on this node. The restored
// volume's mounts do not matter: the marker does not go into it.
func (a *Agent) writeVolumeMarker(ctx context.Context, pod *corev1.Pod, markers, volume, restoreUID, failure string) error {
	tgt, err := a.volumeOf(ctx, pod, markers)
	if err != nil {
		return fmt.Errorf("restore-wait's marker volume: %w", err)
	}
	return restorewait.WriteVolumeMarker(tgt.dir, restoreUID, volume, failure)
}

// sharer is a pod that mounts the restored claim as its volume named volume.
type sharer struct {
	pod    *corev1.Pod
	volume string
}

// podsSharingClaim lists, by name, the other pods than pod that restore-wait holds for
// restoreUID and that mount the claim pod mounts as volume: those whose restore the
// restore controller left to this one. It reads the API server, as they may run on
// other nodes (a ReadWriteMany claim) or not be scheduled yet. A volume that is not a
// claim, or a list that fails (logged), gives none.
func (r *PodVolumeRestoreReconciler) podsSharingClaim(ctx context.Context, pod *corev1.Pod, volume, restoreUID string) []sharer {
	claim := claimOf(pod, volume)
	if claim == "" {
		return nil
	}
	var pods corev1.PodList
	if err := r.apiReader.List(ctx, &pods, client.InNamespace(pod.Namespace)); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the pods that share the restored claim", "claim", claim)
		return nil
	}
	var out []sharer
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.UID == pod.UID || !p.DeletionTimestamp.IsZero() || !restorewait.Holds(p, restoreUID) {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				out = append(out, sharer{pod: p, volume: v.Name})
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.Name < out[j].pod.Name })
	return out
}

// claimOf is the claim pod mounts as volume, "" when that volume is not a claim.
func claimOf(pod *corev1.Pod, volume string) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}

// writeMarker writes, into volume of pod (on this node), the marker of the
// restore-wait that holds holder (which mounts the same data as holderVolume), unless
// holder mounts it read-only.
func (r *PodVolumeRestoreReconciler) writeMarker(ctx context.Context, pod *corev1.Pod, volume string, holder *corev1.Pod, holderVolume, restoreUID string, owner restorewait.Owner, failure string) error {
	tgt, err := r.volumeOf(ctx, pod, volume)
	if err != nil {
		return err
	}
	if why := readOnlyReason(holder, holderVolume, tgt.pv); why != "" {
		if holder.UID != pod.UID {
			return fmt.Errorf("volume %s of pod %s is mounted read-only (%s)", holderVolume, holder.Name, why)
		}
		return fmt.Errorf("volume %s is mounted read-only (%s)", volume, why)
	}
	return restorewait.WriteMarkerFor(tgt.dir, restoreUID, restorewait.MarkerPodUID(holder, restoreUID), owner, failure)
}

// restoreWaitVolumes lists the other volumes the pod's restore-wait for restoreUID
// waits for: those it mounts at restorewait.MountPath (not its marker volume).
func restoreWaitVolumes(pod *corev1.Pod, restoreUID, except string) []string {
	var out []string
	for _, c := range pod.Spec.InitContainers {
		if !restorewait.Holds(&corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{c}}}, restoreUID) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name != except && m.MountPath == restorewait.MountPath(m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	return out
}
