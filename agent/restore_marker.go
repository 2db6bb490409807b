package agent

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// markRestoreWait tells the pod's restore-wait how the restore ended, whatever ended
// it (review M1: an agent restart, a cancel, a Stalled repository, a refused key, a
// volume that cannot be found or is read-only, a failed mover): the marker
// .holdfast/<restore uid> when the data is in place, <marker>.failed holding the
// reason otherwise (restorewait.WriteMarker). Only a pod held by restore-wait for this
// restore gets one: in a running pod's volume nobody would remove it.
//
// A failure marker goes into the restored volume, or, when that one cannot be written
// (not found on the node, mounted read-only), into another volume the same
// restore-wait waits for: restore-wait fails at the first failure marker it finds, so
// one is enough for the pod to show the reason instead of waiting for ever. A
// Completed restore whose done-marker cannot be written is failed.
func (r *PodVolumeRestoreReconciler) markRestoreWait(ctx context.Context, pvr *v1.PodVolumeRestore, o outcome) outcome {
	restoreUID := restorewait.RestoreUIDOf(pvr)
	if restoreUID == "" {
		return o
	}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: pvr.Spec.Pod.Name}, pod); err != nil ||
		string(pod.UID) != pvr.Spec.Pod.UID || !restorewait.Holds(pod, restoreUID) {
		// Gone, replaced or not held: nobody waits for a marker.
		return o
	}
	failure := ""
	volumes := []string{pvr.Spec.Volume}
	if o.phase != v1.RunCompleted {
		failure = o.msg
		if failure == "" {
			failure = "the restore ended " + string(o.phase)
		}
		volumes = append(volumes, restoreWaitVolumes(pod, restoreUID, pvr.Spec.Volume)...)
	}
	owner := restorewait.RunsAs(pod, restoreUID)
	var errs []error
	for _, volume := range volumes {
		err := r.writeMarker(ctx, pod, volume, restoreUID, owner, failure)
		if err == nil {
			return o
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	ctrl.LoggerFrom(ctx).Error(err, "telling restore-wait how the restore ended", "pod", pod.Name, "phase", o.phase)
	if o.phase == v1.RunCompleted {
		return outcome{phase: v1.RunFailed, reason: reasonFailed, res: o.res,
			msg: "the data was restored but the done-marker could not be written: " + err.Error()}
	}
	return o
}

// writeMarker writes restore-wait's marker into one volume of the pod, unless the pod
// mounts it read-only.
func (r *PodVolumeRestoreReconciler) writeMarker(ctx context.Context, pod *corev1.Pod, volume, restoreUID string, owner restorewait.Owner, failure string) error {
	tgt, err := r.volumeOf(ctx, pod, volume)
	if err != nil {
		return err
	}
	if why := readOnlyReason(pod, volume, tgt.pv); why != "" {
		return fmt.Errorf("volume %s is mounted read-only (%s)", volume, why)
	}
	return restorewait.WriteMarker(tgt.dir, restoreUID, owner, failure)
}

// restoreWaitVolumes lists the other volumes the pod's restore-wait for restoreUID
// mounts: the volumes it waits for.
func restoreWaitVolumes(pod *corev1.Pod, restoreUID, except string) []string {
	var out []string
	for _, c := range pod.Spec.InitContainers {
		if !restorewait.Holds(&corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{c}}}, restoreUID) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name != except {
				out = append(out, m.Name)
			}
		}
	}
	return out
}
