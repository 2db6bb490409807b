package agent

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// writeMarker tells the pod's restore-wait how the restore of the volume in dir ended
// (restorewait.WriteMarker: the marker .holdfast/<restore uid>, or <marker>.failed
// holding the reason). The marker directory is made for the user restore-wait runs
// as, read from the pod; if the pod cannot be read it is root's, which restore-wait can
// read but not clean up.
func (r *PodVolumeRestoreReconciler) writeMarker(ctx context.Context, pvr *v1.PodVolumeRestore, dir, restoreUID string, phase v1.RunPhase, msg string) error {
	owner := restorewait.UnknownOwner
	pod := &corev1.Pod{}
	err := r.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: pvr.Spec.Pod.Name}, pod)
	switch {
	case err != nil:
		ctrl.LoggerFrom(ctx).Error(err, "reading the pod for restore-wait's user; the marker directory is made root's", "pod", pvr.Spec.Pod.Name)
	case string(pod.UID) == pvr.Spec.Pod.UID:
		owner = restorewait.RunsAs(pod, restoreUID)
	}
	failure := ""
	if phase != v1.RunCompleted {
		failure = msg
		if failure == "" {
			failure = "the restore ended " + string(phase)
		}
	}
	return restorewait.WriteMarker(dir, restoreUID, owner, failure)
}
