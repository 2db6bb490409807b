package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// Condition reasons of a VolumeRestore.
const (
	ReasonWaitingForPods = "WaitingForPods"
	// ReasonReadingStore: the repositories of the source namespace are still being
	// connected or read, so what a pod created now would wait for is not known yet.
	ReasonReadingStore     = "ReadingStore"
	ReasonRestoring        = "Restoring"
	ReasonRestored         = "Restored"
	ReasonRestoreFailed    = "RestoreFailed"
	ReasonSourceNotGranted = "SourceNotGranted"
	ReasonInvalidSelector  = "InvalidSelector"
)

// maxVolumeStatuses bounds status.volumes (the API allows 256).
const maxVolumeStatuses = 256

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch;create
// Each PodVolumeRestore is created with its VolumeRestore as controller owner, and
// SetControllerReference sets blockOwnerDeletion: with OwnerReferencesPermissionEnforcement
// (OpenShift) only who may update the owner's finalizers may do that.
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// VolumeRestoreReconciler turns a VolumeRestore into PodVolumeRestores, one per
// (scheduled pod, volume), and reports their outcome.
type VolumeRestoreReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Catalog lists the restore points the store holds, for volumes whose
	// PodVolumeBackups are gone; nil reads PodVolumeBackups only.
	Catalog RestorePointLister
}

// RestorePointLister is what the store holds for a namespace (storage.Catalog).
type RestorePointLister interface {
	RestorePoints(ctx context.Context, namespace, location string) ([]storage.RestorePoint, []string, error)
}

// SetupWithManager registers the reconciler.
func (r *VolumeRestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("holdfast-restore")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeRestore{}).
		Owns(&v1.PodVolumeRestore{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.restoresOfPod)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.restoresFromNamespace)).
		// A repository that connects, or whose restore points change, can give a
		// pending restore what it waits for.
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.restoresReading(ctx, o.GetNamespace())
		})).
		Complete(r)
}

// scope carries what one reconcile found, from step to step.
type scope struct {
	vr       *v1.VolumeRestore
	pods     []corev1.Pod
	src      sources
	existing []v1.PodVolumeRestore
	// missing are failures that have no PodVolumeRestore (no backup to restore).
	missing []v1.RestoreVolumeStatus
	// noBackup says why volumes the restore does not name have nothing to restore.
	noBackup []string
	// unscheduled counts matching pods that are not on a node yet.
	unscheduled int
}

// Reconcile runs the steps of a restore and patches its status once at the end.
func (r *VolumeRestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	vr := &v1.VolumeRestore{}
	if err := r.Get(ctx, req.NamespacedName, vr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vr.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	base := vr.DeepCopy()
	defer func() {
		if err := r.Status().Patch(ctx, vr, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
			retErr = fmt.Errorf("patching the status of VolumeRestore %s: %w", req.NamespacedName, err)
		}
	}()

	if isFinal(vr.Status.Phase) {
		// A restore happens once; its PodVolumeRestores are all finished, so its
		// summary cannot change any more.
		return ctrl.Result{}, nil
	}
	sc := &scope{vr: vr}
	for _, step := range []func(context.Context, *scope) (bool, error){
		r.checkSource,
		r.selectPods,
		r.createRestores,
	} {
		stop, err := step(ctx, sc)
		if err != nil {
			conditions.MarkReconciling(&vr.Status.Conditions, vr.Generation, ReasonRestoring, err.Error())
			return ctrl.Result{}, err
		}
		if stop {
			vr.Status.ObservedGeneration = vr.Generation
			return ctrl.Result{}, nil
		}
	}
	if err := r.summarize(ctx, sc); err != nil {
		return ctrl.Result{}, err
	}
	vr.Status.ObservedGeneration = vr.Generation
	return ctrl.Result{}, nil
}

// checkSource stalls a restore from another namespace that has not granted it.
// Sets Stalled (phase Pending) while the grant is missing.
func (r *VolumeRestoreReconciler) checkSource(ctx context.Context, sc *scope) (bool, error) {
	vr := sc.vr
	src := sourceNamespace(vr)
	if src == vr.Namespace {
		return false, nil
	}
	ns := &corev1.Namespace{}
	err := r.Get(ctx, types.NamespacedName{Name: src}, ns)
	switch {
	case apierrors.IsNotFound(err):
		r.stall(vr, ReasonSourceNotGranted, fmt.Sprintf("spec.sourceNamespace: namespace %s does not exist", src))
		return true, nil
	case err != nil:
		return false, err
	case !granted(ns, vr.Namespace):
		r.stall(vr, ReasonSourceNotGranted, fmt.Sprintf(
			"spec.sourceNamespace: namespace %s does not allow restores into %s; annotate it with %s: %s",
			src, vr.Namespace, v1.AnnotationRestoreInto, vr.Namespace))
		return true, nil
	}
	return false, nil
}

// selectPods lists the pods the restore targets and the backups of the source namespace.
func (r *VolumeRestoreReconciler) selectPods(ctx context.Context, sc *scope) (bool, error) {
	vr := sc.vr
	sel, err := metav1.LabelSelectorAsSelector(&vr.Spec.PodSelector)
	if err != nil {
		r.stall(vr, ReasonInvalidSelector, "spec.podSelector: "+err.Error())
		return true, nil
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(vr.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return false, fmt.Errorf("listing the pods of VolumeRestore %s/%s: %w", vr.Namespace, vr.Name, err)
	}
	for _, pod := range pods.Items {
		switch {
		case !pod.DeletionTimestamp.IsZero(), pod.Status.Phase == corev1.PodSucceeded, pod.Status.Phase == corev1.PodFailed:
		case pod.Spec.NodeName == "":
			sc.unscheduled++
		default:
			sc.pods = append(sc.pods, pod)
		}
	}
	src, err := r.sources(ctx, vr)
	if err != nil {
		return false, err
	}
	sc.src = src
	var existing v1.PodVolumeRestoreList
	if err := r.List(ctx, &existing, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr.Name)}); err != nil {
		return false, fmt.Errorf("listing the PodVolumeRestores of %s/%s: %w", vr.Namespace, vr.Name, err)
	}
	sc.existing = existing.Items
	return false, nil
}

// sources reads what the restore can restore from: the source namespace's
// PodVolumeBackups and what the store holds. Reading the store also connects the
// repositories it holds for the namespace, before any pod is planned: their restore
// points (in their status) are what the pod webhook sees when the application's pods
// are created.
func (r *VolumeRestoreReconciler) sources(ctx context.Context, vr *v1.VolumeRestore) (sources, error) {
	src := sourceNamespace(vr)
	var backups v1.PodVolumeBackupList
	if err := r.List(ctx, &backups, client.InNamespace(src)); err != nil {
		return sources{}, fmt.Errorf("listing the backups of namespace %s: %w", src, err)
	}
	out := sources{backups: backups.Items}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: src}, ns); err != nil {
		return sources{}, client.IgnoreNotFound(err)
	}
	out.namespace = ns
	if r.Catalog == nil {
		return out, nil
	}
	points, waiting, err := r.Catalog.RestorePoints(ctx, src, vr.Spec.StorageLocation)
	if err != nil {
		return sources{}, fmt.Errorf("reading the restore points of namespace %s from the store: %w", src, err)
	}
	out.store, out.waiting = points, waiting
	// The pod webhook plans from the restore points in the repositories' status, not
	// from the store: until a connected repository's are there, a pod created now
	// would not wait for its data, so the restore is still reading the store.
	var repos v1.BackupRepositoryList
	if err := r.List(ctx, &repos, client.InNamespace(src)); err != nil {
		return sources{}, fmt.Errorf("listing the BackupRepositories of namespace %s: %w", src, err)
	}
	for _, repo := range repos.Items {
		if vr.Spec.StorageLocation != "" && repo.Spec.StorageLocation != vr.Spec.StorageLocation {
			continue
		}
		if conditions.IsReady(repo.Status.Conditions) && repo.Status.RestorePointsTime == nil {
			out.waiting = append(out.waiting, fmt.Sprintf("BackupRepository %s/%s: listing its restore points", src, repo.Name))
		}
	}
	return out, nil
}

// createRestores creates a PodVolumeRestore for every planned volume of every scheduled
// pod that has none yet. A pod is planned once: later backups do not restore again
// into a pod that was already restored.
func (r *VolumeRestoreReconciler) createRestores(ctx context.Context, sc *scope) (bool, error) {
	vr := sc.vr
	done := map[string]bool{}
	for _, pvr := range sc.existing {
		done[pvr.Spec.Pod.UID] = true
	}
	p := &planner{client: r.Client}
	created := 0
	for i := range sc.pods {
		pod := &sc.pods[i]
		plan, err := p.plan(ctx, vr, pod, sc.src)
		if err != nil {
			return false, err
		}
		plan = restrictToWaited(plan, pod, vr.Name)
		for _, m := range plan.Missing {
			sc.missing = append(sc.missing, v1.RestoreVolumeStatus{Pod: pod.Name, Volume: m.Volume, Phase: v1.RunFailed, Message: m.Message})
		}
		for _, m := range plan.NoBackup {
			sc.noBackup = append(sc.noBackup, m.Message)
		}
		if done[string(pod.UID)] {
			continue
		}
		for _, vp := range plan.Volumes {
			pvr, err := r.newPodVolumeRestore(vr, pod, vp)
			if err != nil {
				return false, err
			}
			if err := r.Create(ctx, pvr); err != nil && !apierrors.IsAlreadyExists(err) {
				return false, fmt.Errorf("creating PodVolumeRestore %s/%s: %w", pvr.Namespace, pvr.Name, err)
			}
			sc.existing = append(sc.existing, *pvr)
			created++
		}
	}
	if created > 0 && vr.Status.StartTime == nil {
		now := metav1.Now()
		vr.Status.StartTime = &now
		r.Recorder.Eventf(vr, nil, corev1.EventTypeNormal, "RestoreStarted", "Restore", "restoring %d volume(s)", created)
	}
	return false, nil
}

// restrictToWaited keeps only the volumes a pod's restore-wait init container waits
// for, when the webhook gave it one: a volume whose backup appeared after the pod
// started must not be restored under the running application.
func restrictToWaited(plan podPlan, pod *corev1.Pod, restore string) podPlan {
	waited, ok := waitedVolumes(pod)[restore]
	if !ok {
		return plan
	}
	keep := plan.Volumes[:0]
	for _, vp := range plan.Volumes {
		for _, w := range waited {
			if vp.Volume == w {
				keep = append(keep, vp)
			}
		}
	}
	plan.Volumes = keep
	return plan
}

// waitedVolumes reads the webhook's annotation: restore name → volumes waited for.
func waitedVolumes(pod *corev1.Pod) map[string][]string {
	out := map[string][]string{}
	if raw := pod.Annotations[v1.AnnotationRestoreWait]; raw != "" {
		_ = json.Unmarshal([]byte(raw), &out)
	}
	return out
}

func (r *VolumeRestoreReconciler) newPodVolumeRestore(vr *v1.VolumeRestore, pod *corev1.Pod, vp volumePlan) (*v1.PodVolumeRestore, error) {
	pt := vp.Point
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{
			Name:      identity.PodVolumeRestoreName(vr.Name, pod.Name, vp.Volume),
			Namespace: vr.Namespace,
			Labels: map[string]string{
				v1.LabelRestore:         identity.LabelValue(vr.Name),
				v1.LabelStorageLocation: identity.LabelValue(pt.StorageLocation),
				v1.LabelManagedBy:       v1.ManagedByValue,
			},
		},
		Spec: v1.PodVolumeRestoreSpec{
			Node:            pod.Spec.NodeName,
			Pod:             v1.PodReference{Name: pod.Name, UID: string(pod.UID)},
			Volume:          vp.Volume,
			VolumeRestore:   vr.Name,
			SnapshotID:      pt.SnapshotID,
			PodVolumeBackup: pt.BackupName,
			SourceNamespace: pt.Namespace,
			SourcePath:      pt.SourcePath,
			StorageLocation: pt.StorageLocation,
			Repository:      pt.Repository,
			Uploader:        pt.Uploader,
		},
	}
	if err := controllerutil.SetControllerReference(vr, pvr, r.Scheme()); err != nil {
		return nil, err
	}
	return pvr, nil
}

// summarize aggregates the PodVolumeRestores into status: counts, per-volume outcome,
// phase and conditions. Sets Ready when every volume is restored, Stalled when some
// failed, Reconciling while pods or volumes are pending.
func (r *VolumeRestoreReconciler) summarize(ctx context.Context, sc *scope) error {
	vr := sc.vr
	if sc.existing == nil {
		var existing v1.PodVolumeRestoreList
		if err := r.List(ctx, &existing, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr.Name)}); err != nil {
			return err
		}
		sc.existing = existing.Items
	}
	volumes := append([]v1.RestoreVolumeStatus{}, sc.missing...)
	var completed, failed, running int32
	var failures []string
	for _, pvr := range sc.existing {
		st := v1.RestoreVolumeStatus{Pod: pvr.Spec.Pod.Name, Volume: pvr.Spec.Volume, PodVolumeRestore: pvr.Name,
			SnapshotID: pvr.Spec.SnapshotID, Phase: pvr.Status.Phase, Message: pvr.Status.Message}
		if st.Phase == "" {
			st.Phase = v1.RunPending
		}
		switch st.Phase {
		case v1.RunCompleted:
			completed++
		case v1.RunFailed, v1.RunCanceled:
			failed++
			failures = append(failures, fmt.Sprintf("%s/%s: %s", st.Pod, st.Volume, st.Message))
		default:
			running++
		}
		volumes = append(volumes, st)
	}
	for _, m := range sc.missing {
		failed++
		failures = append(failures, m.Message)
	}
	sort.Slice(volumes, func(i, j int) bool {
		if volumes[i].Pod != volumes[j].Pod {
			return volumes[i].Pod < volumes[j].Pod
		}
		return volumes[i].Volume < volumes[j].Volume
	})
	if len(volumes) > maxVolumeStatuses {
		volumes = volumes[:maxVolumeStatuses]
	}
	vr.Status.Volumes = volumes
	vr.Status.VolumesCompleted, vr.Status.VolumesFailed = completed, failed
	vr.Status.VolumesTotal = completed + failed + running

	previous := vr.Status.Phase
	total := vr.Status.VolumesTotal
	switch {
	case total == 0:
		vr.Status.Phase = v1.RestorePending
		reason, msg := waitingMessage(sc)
		conditions.MarkReconciling(&vr.Status.Conditions, vr.Generation, reason, msg)
	case running > 0 || sc.unscheduled > 0:
		vr.Status.Phase = v1.RestoreInProgress
		msg := fmt.Sprintf("%d of %d volume(s) restored", completed, total)
		if sc.unscheduled > 0 {
			msg += fmt.Sprintf("; waiting for %d pod(s) to be scheduled", sc.unscheduled)
		}
		conditions.MarkReconciling(&vr.Status.Conditions, vr.Generation, ReasonRestoring, msg)
	case failed == 0:
		vr.Status.Phase = v1.RestoreCompleted
		conditions.MarkReady(&vr.Status.Conditions, vr.Generation, ReasonRestored,
			fmt.Sprintf("restored %d volume(s) of %d pod(s)", completed, countPods(volumes)))
	default:
		vr.Status.Phase = v1.RestorePartiallyFailed
		if completed == 0 {
			vr.Status.Phase = v1.RestoreFailed
		}
		sort.Strings(failures)
		msg := fmt.Sprintf("%d of %d volume(s) could not be restored: %s", failed, total, strings.Join(first(failures, 3), "; "))
		conditions.MarkStalled(&vr.Status.Conditions, vr.Generation, ReasonRestoreFailed, msg)
	}
	if isFinal(vr.Status.Phase) && vr.Status.CompletionTime == nil {
		now := metav1.Now()
		vr.Status.CompletionTime = &now
	}
	if vr.Status.Phase != previous && isFinal(vr.Status.Phase) {
		eventType, reason := corev1.EventTypeNormal, "RestoreCompleted"
		if vr.Status.Phase != v1.RestoreCompleted {
			eventType, reason = corev1.EventTypeWarning, "Restore"+string(vr.Status.Phase)
		}
		r.Recorder.Eventf(vr, nil, eventType, reason, "Restore", "%s", conditions.ReadyMessage(vr.Status.Conditions))
		ctrl.LoggerFrom(ctx).Info("restore finished", "phase", vr.Status.Phase, "message", conditions.ReadyMessage(vr.Status.Conditions))
	}
	return nil
}

// waitingMessage says why a restore has no volume to restore yet. Without pods, it is
// what someone who applies the restore before the application waits for: reason
// ReadingStore while what a new pod would wait for is not known yet, then
// WaitingForPods, whose message says whether pods created now wait and, when the store
// holds backups of an earlier namespace of this name that it does not adopt, that
// those are not restored and how an administrator lets them be.
func waitingMessage(sc *scope) (reason, msg string) {
	if sc.unscheduled > 0 {
		return ReasonWaitingForPods, fmt.Sprintf("waiting for %d matching pod(s) to be scheduled", sc.unscheduled)
	}
	if len(sc.pods) > 0 {
		msg := fmt.Sprintf("%d matching pod(s) have no volume with a backup to restore", len(sc.pods))
		if len(sc.noBackup) > 0 {
			// Each says why, and what the store holds that this namespace may not read.
			msg += ": " + strings.Join(first(sc.noBackup, 2), "; ")
		} else if len(sc.src.waiting) > 0 {
			return ReasonReadingStore, msg + "; still reading the store: " + strings.Join(sc.src.waiting, "; ")
		}
		return ReasonWaitingForPods, msg
	}
	if len(sc.src.waiting) > 0 {
		return ReasonReadingStore, "reading the store: " + strings.Join(sc.src.waiting, "; ")
	}
	if foreign := sc.src.unadopted(); len(foreign) > 0 {
		return ReasonWaitingForPods, "waiting for pods matching spec.podSelector; " + earlierBackups(sourceNamespace(sc.vr), "", foreign) +
			"; until then pods created now do not wait for those"
	}
	return ReasonWaitingForPods, "waiting for pods matching spec.podSelector; pods created now wait for their data in a restore-wait init container"
}

// stall holds a restore that only a change by the user can unblock (its spec, or the
// source namespace's grant, which is watched). It stays Pending: nothing was restored,
// and it proceeds once fixed.
func (r *VolumeRestoreReconciler) stall(vr *v1.VolumeRestore, reason, msg string) {
	if !conditions.IsStalled(vr.Status.Conditions) || conditions.ReadyMessage(vr.Status.Conditions) != msg {
		r.Recorder.Eventf(vr, nil, corev1.EventTypeWarning, reason, "Restore", "%s", msg)
	}
	vr.Status.Phase = v1.RestorePending
	conditions.MarkStalled(&vr.Status.Conditions, vr.Generation, reason, msg)
}

func (r *VolumeRestoreReconciler) restoresOfPod(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1.VolumeRestoreList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, vr := range list.Items {
		if isFinal(vr.Status.Phase) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&vr.Spec.PodSelector)
		if err == nil && sel.Matches(labels.Set(obj.GetLabels())) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vr)})
		}
	}
	return reqs
}

// restoresFromNamespace re-checks the restores that read a namespace's backups when
// the namespace (its restore-into grant, the earlier namespaces it adopts) changes.
func (r *VolumeRestoreReconciler) restoresFromNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.restoresReading(ctx, obj.GetName())
}

// restoresReading lists the unfinished restores whose source is namespace ns.
func (r *VolumeRestoreReconciler) restoresReading(ctx context.Context, ns string) []reconcile.Request {
	var list v1.VolumeRestoreList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, vr := range list.Items {
		if sourceNamespace(&vr) == ns && !isFinal(vr.Status.Phase) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vr)})
		}
	}
	return reqs
}

func isFinal(p v1.RestorePhase) bool {
	return p == v1.RestoreCompleted || p == v1.RestoreFailed || p == v1.RestorePartiallyFailed
}

func countPods(vols []v1.RestoreVolumeStatus) int {
	seen := map[string]bool{}
	for _, v := range vols {
		seen[v.Pod] = true
	}
	return len(seen)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
