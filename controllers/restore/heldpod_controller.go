package restore

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Deleting a held pod and removing its scheduling gate.
// +kubebuilder:rbac:groups="",resources=pods,verbs=patch;delete

// HeldPodReconciler ends the hold of the pods the pod webhook created behind
// restorewait.SchedulingGate, because a restore that selects them could not yet say
// which volumes they wait for, or because their namespace was just applied again and
// its restore was about to follow. Such a pod was never scheduled, so nothing in it
// ran. Once every restore that selects it knows its backups, a pod with a controller
// is deleted, and its controller creates it again, now with restore-wait; a pod
// without one has the gate removed. A pod that no restore selects has the gate
// removed once its namespace's hold window passed.
type HeldPodReconciler struct {
	client.Client
	// APIReader lists the VolumeRestores the cache does not hold yet.
	APIReader client.Reader
	Recorder  events.EventRecorder
}

// SetupWithManager registers the reconciler: gated pods, and the restores that may
// release them.
func (r *HeldPodReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("holdfast-restore")
	}
	gated := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		return ok && restorewait.Gated(pod)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("heldpod").
		For(&corev1.Pod{}, builder.WithPredicates(gated)).
		Watches(&v1.VolumeRestore{}, handler.EnqueueRequestsFromMapFunc(r.heldPodsOf)).
		Complete(r)
}

// Reconcile releases one held pod, or waits for what it waits for.
func (r *HeldPodReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !restorewait.Gated(pod) || !pod.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	restores, err := r.restoresSelecting(ctx, pod)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, vr := range restores {
		if !readyForPods(vr) {
			// Its status change (watched) brings the pod back.
			log.V(1).Info("held until the restore has read the store", "restore", vr.Name)
			return ctrl.Result{}, nil
		}
	}
	if len(restores) == 0 {
		ns, err := getNamespace(ctx, r.Client, r.APIReader, pod.Namespace)
		if err != nil {
			return ctrl.Result{}, err
		}
		if ns != nil && namespaceMayRestore(ns, time.Now()) {
			return ctrl.Result{RequeueAfter: time.Until(ns.CreationTimestamp.Add(restoreHoldWindow)) + 100*time.Millisecond}, nil
		}
		return ctrl.Result{}, r.ungate(ctx, pod, "no VolumeRestore selects it")
	}
	if metav1.GetControllerOf(pod) == nil {
		// Nobody would create it again: it starts without restore-wait, and the
		// restore reports it (runningPods).
		return ctrl.Result{}, r.ungate(ctx, pod, "it has no controller to create it again with restore-wait")
	}
	// Never scheduled, nothing ran: its controller creates it again, and the webhook
	// now knows what it waits for.
	err = r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return ctrl.Result{}, fmt.Errorf("deleting held pod %s/%s so that its controller creates it again: %w", pod.Namespace, pod.Name, err)
	}
	log.Info("held pod deleted: its controller creates it again, waiting for its data", "pod", pod.Name)
	r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, "RestorePlanned", "Recreate",
		"deleted before it was scheduled: %s is ready, and the pod that replaces it waits for its data in restore-wait", restores[0].Name)
	return ctrl.Result{}, nil
}

// restoresSelecting lists the restores that take pod now, from the cache and, when the
// cache has none, from the API server.
func (r *HeldPodReconciler) restoresSelecting(ctx context.Context, pod *corev1.Pod) ([]*v1.VolumeRestore, error) {
	var list v1.VolumeRestoreList
	if err := r.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the VolumeRestores of namespace %s: %w", pod.Namespace, err)
	}
	out := holding(list.Items, pod, time.Now())
	if len(out) > 0 || r.APIReader == nil {
		return out, nil
	}
	if err := r.APIReader.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the VolumeRestores of namespace %s: %w", pod.Namespace, err)
	}
	return holding(list.Items, pod, time.Now()), nil
}

// ungate removes the scheduling gate, so the pod is scheduled and starts.
func (r *HeldPodReconciler) ungate(ctx context.Context, pod *corev1.Pod, why string) error {
	base := pod.DeepCopy()
	gates := pod.Spec.SchedulingGates[:0:0]
	for _, g := range pod.Spec.SchedulingGates {
		if g.Name != restorewait.SchedulingGate {
			gates = append(gates, g)
		}
	}
	pod.Spec.SchedulingGates = gates
	if err := r.Patch(ctx, pod, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("removing the scheduling gate of pod %s/%s: %w", pod.Namespace, pod.Name, err))
	}
	ctrl.LoggerFrom(ctx).Info("hold ended without restore-wait", "pod", pod.Name, "why", why)
	r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, "RestoreHoldEnded", "Ungate", "scheduled without waiting for a restore: %s", why)
	return nil
}

// heldPodsOf maps a restore to the held pods of its namespace.
func (r *HeldPodReconciler) heldPodsOf(ctx context.Context, obj client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range pods.Items {
		if restorewait.Gated(&pods.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
	return reqs
}
