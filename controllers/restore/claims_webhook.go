package restore

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// An application pod created while a claim restore (spec.claimSelector) is going to
// write, or writes, a claim it mounts must not start on half-restored data: the pod
// webhook holds it with restore-wait for that claim's volume, as it holds the pods of
// a podSelector restore. The restore controller then restores the claim through the
// held pod when no writer pod does yet (it is held, so nothing in it runs), and when
// the claim's writer pod already restores it, the agent releases the held pod once
// that PodVolumeRestore ends (a claim is restored once per restore; the pod is served
// by the writer's PodVolumeRestore, see agent/served_pod_controller.go).

// claimHold is a claim restore that holds a pod, with the pod's volumes it waits for.
type claimHold struct {
	vr   *v1.VolumeRestore
	plan podPlan
}

// claimRestoresHolding lists the claim restores of the pod's namespace that take it
// at time now: not ended, not being deleted, within their pending deadline, ready
// (they have read the store), and restoring a claim the pod mounts that is neither
// left ClaimInUse nor restored already. Each comes with the pod's volumes it restores.
func (w *PodWebhook) claimRestoresHolding(ctx context.Context, pod *corev1.Pod) ([]claimHold, error) {
	var list v1.VolumeRestoreList
	if err := w.Client.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the VolumeRestores of namespace %s: %w", pod.Namespace, err)
	}
	now := time.Now()
	var out []claimHold
	for i := range list.Items {
		vr := &list.Items[i]
		if vr.Spec.ClaimSelector == nil || vr.Status.Phase.IsFinal() || !vr.DeletionTimestamp.IsZero() ||
			!now.Before(vr.PendingDeadlineOf()) || !readyForPods(vr) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(vr.Spec.ClaimSelector)
		if err != nil {
			continue
		}
		var src *sources
		var plan podPlan
		for j := range pod.Spec.Volumes {
			vol := &pod.Spec.Volumes[j]
			claim := identity.ClaimName(pod, vol)
			if claim == "" || !claimTaken(vr, claim) {
				continue
			}
			pvc, err := w.claim(ctx, pod.Namespace, claim)
			if err != nil {
				return nil, err
			}
			if pvc == nil || !sel.Matches(labels.Set(pvc.Labels)) {
				continue
			}
			if src == nil {
				s, err := sourcesFromStatus(ctx, w.Client, vr)
				if err != nil {
					return nil, err
				}
				src = &s
			}
			path := identity.ClaimSourcePath(claim)
			if point, _ := choose(vr, sourceOf(vr, claim), path, *src); point != nil {
				plan.Volumes = append(plan.Volumes, volumePlan{Volume: vol.Name, SourcePath: path, Point: point})
			}
		}
		if len(plan.Volumes) > 0 {
			out = append(out, claimHold{vr: vr, plan: plan})
		}
	}
	return out, nil
}

// claimTaken says whether claim restore vr may still write claim: spec.volumes names
// it (or names none), and its status neither leaves it ClaimInUse nor shows its
// restore ended.
func claimTaken(vr *v1.VolumeRestore, claim string) bool {
	if len(vr.Spec.Volumes) > 0 {
		named := false
		for _, v := range vr.Spec.Volumes {
			named = named || v.Name == claim
		}
		if !named {
			return false
		}
	}
	for _, st := range vr.Status.Volumes {
		if st.Claim == claim && (st.Reason == ReasonClaimInUse || restoreEnded(st.Phase)) {
			return false
		}
	}
	return true
}

// claim reads claim ns/name from the cache and, when the cache does not hold it, from
// the API server; nil when it does not exist.
func (w *PodWebhook) claim(ctx context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	key := client.ObjectKey{Namespace: ns, Name: name}
	err := w.Client.Get(ctx, key, pvc)
	if apierrors.IsNotFound(err) && w.APIReader != nil {
		err = w.APIReader.Get(ctx, key, pvc)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading claim %s: %w", key, err)
	}
	return pvc, nil
}
