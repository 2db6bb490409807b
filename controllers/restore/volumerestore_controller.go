package restore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
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

	"github.com/holdfast-dev/holdfast/agent/restorewait"
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
	ReasonReadingStore = "ReadingStore"
	// ReasonBackupsNotAdopted: the store holds only backups of an earlier namespace
	// of this name, which this one does not adopt; pods created now do not wait.
	ReasonBackupsNotAdopted = "BackupsNotAdopted"
	ReasonRestoring         = "Restoring"
	ReasonRestored          = "Restored"
	ReasonRestoreFailed     = "RestoreFailed"
	ReasonSourceNotGranted  = "SourceNotGranted"
	ReasonInvalidSelector   = "InvalidSelector"
	// ReasonExpired: spec.pendingDeadline passed before any volume was restored.
	ReasonExpired = "Expired"
	// ReasonPodNotHeld, on a volume in status.volumes: restore-wait does not hold its
	// pod and spec.runningPods is Skip, so the volume is left as it is.
	ReasonPodNotHeld = "PodNotHeld"
	// ReasonFlaggedBackup, on the event of a volume: "latest" or "before" restores a
	// backup flagged FilesDropped, because no other backup of its source is left.
	ReasonFlaggedBackup = "RestoringFlaggedBackup"
)

// annotationFlaggedBackup, on a PodVolumeRestore, says that the planner chose a backup
// flagged FilesDropped as the last one left; status.volumes repeats it.
const annotationFlaggedBackup = "backup.holdfast.dev/flagged-backup"

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch;create
// Each PodVolumeRestore is created with its VolumeRestore as controller owner, and
// SetControllerReference sets blockOwnerDeletion: with OwnerReferencesPermissionEnforcement
// (OpenShift) only who may update the owner's finalizers may do that.
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumerestores/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;namespaces;persistentvolumeclaims,verbs=get;list;watch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=get
// Writer pods (claims.go): config/admission/manager_pod_writes.yaml admits only their shape.
// +kubebuilder:rbac:groups="",resources=pods,verbs=create;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// VolumeRestoreReconciler turns a VolumeRestore into PodVolumeRestores, one per
// (scheduled pod, volume), and reports their outcome.
type VolumeRestoreReconciler struct {
	client.Client
	// APIReader reads, uncached, a ReplicaSet the cache does not hold yet (a
	// Deployment's new ReplicaSet), so a pod's source identity is the one its backups
	// have, and the StatefulSets whose later pods a restore waits for. Nil: the cache
	// only, and a restore does not wait for pods a StatefulSet has yet to create.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Catalog lists the restore points the store holds, for volumes whose
	// PodVolumeBackups are gone; nil reads PodVolumeBackups only.
	Catalog RestorePointLister
	// Writer says where the writer pods of claim restores get their settings.
	Writer ClaimPodOptions

	// ends counts the restores that end (metrics.go).
	ends endCounter
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
		// A claim that appears or binds can be restored.
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(r.claimRestoresOf)).
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
	// skipped are the volumes of selected pods that restore-wait does not hold, left
	// as they are (spec.runningPods: Skip); skippedPods counts those pods.
	skipped     []v1.RestoreVolumeStatus
	skippedPods int
	// served are the volumes of pods that mount a claim whose restore is another pod's
	// PodVolumeRestore (a claim is restored once per restore), naming it.
	served []v1.RestoreVolumeStatus
	// unscheduled counts the pods the restore will restore into (held by its
	// restore-wait, or any pod under runningPods: Overwrite) that are not on a node yet.
	unscheduled int
	// toCome counts the pods that StatefulSets it restores have still to create.
	toCome int
	// now is the time of this pass, for the pending deadline.
	now time.Time
	// claims is what a claim restore (spec.claimSelector) found; nil for pods.
	claims *claimScope
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
		err := r.Status().Patch(ctx, vr, client.MergeFrom(base))
		switch {
		case err == nil:
			r.ends.observe(base.Status.Phase, vr, time.Now())
		case !apierrors.IsNotFound(err):
			retErr = fmt.Errorf("patching the status of VolumeRestore %s: %w", req.NamespacedName, err)
		}
	}()

	sc := &scope{vr: vr, now: time.Now()}
	if vr.Status.Phase.IsFinal() {
		// A restore happens once; its PodVolumeRestores are all finished (or it
		// expired before it started any), so its summary cannot change any more.
		// Writer pods left behind (a manager that stopped in between) go.
		if vr.Spec.ClaimSelector != nil {
			return ctrl.Result{}, r.cleanWriters(ctx, sc, true)
		}
		return ctrl.Result{}, nil
	}
	steps := []func(context.Context, *scope) (bool, error){r.checkSource, r.selectPods, r.createRestores}
	if vr.Spec.ClaimSelector != nil {
		steps = []func(context.Context, *scope) (bool, error){r.checkSource, r.selectClaims, r.createClaimRestores}
	}
	for _, step := range steps {
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
	if vr.Spec.ClaimSelector != nil {
		if err := r.cleanWriters(ctx, sc, vr.Status.Phase.IsFinal()); err != nil {
			return ctrl.Result{}, err
		}
	}
	vr.Status.ObservedGeneration = vr.Generation
	if sc.claims != nil && len(sc.claims.waiting) > 0 {
		// A writer pod's start timeout or the pending deadline, whichever comes first;
		// the pod and claim watches bring it back sooner.
		next := min(r.Writer.StartDeadline(), time.Until(vr.PendingDeadlineOf())+time.Second)
		return ctrl.Result{RequeueAfter: max(next, time.Second)}, nil
	}
	if vr.Status.Phase == v1.RestorePending {
		// Nothing else may happen before the deadline: come back to expire it.
		return ctrl.Result{RequeueAfter: time.Until(vr.PendingDeadlineOf()) + time.Second}, nil
	}
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
			if restorewait.Holds(&pod, string(vr.UID)) || r.overwrites(sc) {
				sc.unscheduled++
			}
		default:
			sc.pods = append(sc.pods, pod)
		}
	}
	if sc.toCome, err = r.podsToCome(ctx, sc, pods.Items); err != nil {
		return false, err
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

// podsToCome counts the pods that the StatefulSets this restore holds pods of have
// still to create. An OrderedReady StatefulSet (the default) creates its next pod only
// once the previous one is Ready, that is after that pod's restore: the restore must
// not end before the later pods exist, or they would start without waiting. Only
// until the pending deadline, after which the restore takes no new pod.
func (r *VolumeRestoreReconciler) podsToCome(ctx context.Context, sc *scope, pods []corev1.Pod) (int, error) {
	vr := sc.vr
	if r.APIReader == nil || !sc.now.Before(vr.PendingDeadlineOf()) {
		return 0, nil
	}
	type statefulSet struct {
		name    string
		pods    int
		holding bool
	}
	sets := map[types.UID]*statefulSet{}
	for i := range pods {
		pod := &pods[i]
		owner := metav1.GetControllerOf(pod)
		if owner == nil || owner.Kind != "StatefulSet" || !pod.DeletionTimestamp.IsZero() {
			continue
		}
		set := sets[owner.UID]
		if set == nil {
			set = &statefulSet{name: owner.Name}
			sets[owner.UID] = set
		}
		set.pods++
		set.holding = set.holding || restorewait.Holds(pod, string(vr.UID))
	}
	n := 0
	for uid, set := range sets {
		if !set.holding {
			continue
		}
		sts := &appsv1.StatefulSet{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vr.Namespace, Name: set.name}, sts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading StatefulSet %s/%s, whose pods VolumeRestore %s restores: %w", vr.Namespace, set.name, vr.Name, err)
		}
		if sts.UID != uid || sts.Spec.PodManagementPolicy == appsv1.ParallelPodManagement {
			continue
		}
		want := 1
		if sts.Spec.Replicas != nil {
			want = int(*sts.Spec.Replicas)
		}
		if want > set.pods {
			n += want - set.pods
		}
	}
	return n, nil
}

// overwrites says whether this pass may restore into pods that restore-wait does not
// hold: only under runningPods: Overwrite, and only until the pending deadline (a
// restore never takes new pods after it).
func (r *VolumeRestoreReconciler) overwrites(sc *scope) bool {
	return sc.vr.OverwritesRunningPods() && sc.now.Before(sc.vr.PendingDeadlineOf())
}

// annotationClaim, on a PodVolumeRestore, names the claim it restores: the other pods
// of its restore that mount that claim are served by it (see createRestores), and the
// agents release their restore-wait by it.
const annotationClaim = restorewait.AnnotationClaim

// claimRestore is the PodVolumeRestore that restores a claim for every pod of a
// restore that mounts it.
type claimRestore struct {
	name   string
	podUID string
	pod    string
}

// createRestores creates a PodVolumeRestore for every planned volume of every scheduled
// pod that has none yet and that the restore may write into: a pod its restore-wait
// holds, or, under runningPods: Overwrite, any selected pod. The volumes of other pods
// are reported skipped. A pod is planned once: later backups do not restore again
// into a pod that was already restored.
//
// A claim is restored once (issue 15 item 4): pods taken oldest first (then by name),
// the first one that mounts a claim gets its PodVolumeRestore, and the other pods
// that mount it are served by that one (sc.served); the agent then releases the
// restore-wait of each of them.
func (r *VolumeRestoreReconciler) createRestores(ctx context.Context, sc *scope) (bool, error) {
	vr := sc.vr
	done := map[string]bool{}
	own := map[string]bool{} // pod UID/volume that have a PodVolumeRestore of their own
	claims := map[string]claimRestore{}
	byUID := map[string]*corev1.Pod{}
	for i := range sc.pods {
		byUID[string(sc.pods[i].UID)] = &sc.pods[i]
	}
	for _, pvr := range sc.existing {
		done[pvr.Spec.Pod.UID] = true
		own[pvr.Spec.Pod.UID+"/"+pvr.Spec.Volume] = true
		claim := pvr.Annotations[annotationClaim]
		if pod := byUID[pvr.Spec.Pod.UID]; claim == "" && pod != nil {
			claim = claimOf(pod, pvr.Spec.Volume) // made before the annotation
		}
		if _, ok := claims[claim]; claim != "" && (!ok || pvr.Name < claims[claim].name) {
			claims[claim] = claimRestore{name: pvr.Name, podUID: pvr.Spec.Pod.UID, pod: pvr.Spec.Pod.Name}
		}
	}
	// Oldest first, so which pod's restore serves a claim does not depend on list order.
	slices.SortStableFunc(sc.pods, func(a, b corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	p := &planner{client: r.Client, live: r.APIReader}
	// One pass at a time gives the replicas of an owner their slots; the
	// PodVolumeRestores record them for the next passes.
	p.assignSlots(ctx, vr, sc.pods, sc.existing, sc.src, func(pod *corev1.Pod) bool {
		return restorewait.Holds(pod, string(vr.UID)) || r.overwrites(sc)
	})
	created := 0
	for i := range sc.pods {
		pod := &sc.pods[i]
		plan, err := p.plan(ctx, vr, pod, sc.src)
		if err != nil {
			return false, err
		}
		held := restorewait.Holds(pod, string(vr.UID))
		if !done[string(pod.UID)] && !held && !r.overwrites(sc) {
			// Never written into: a pod that runs without waiting for this restore.
			for _, vp := range plan.Volumes {
				sc.skipped = append(sc.skipped, v1.RestoreVolumeStatus{Pod: pod.Name, Volume: vp.Volume, SnapshotID: vp.Point.SnapshotID,
					Reason: ReasonPodNotHeld, Message: notHeldMessage(vr, pod, sc.now)})
			}
			if len(plan.Volumes) > 0 {
				sc.skippedPods++
			}
			continue
		}
		plan = restrictToWaited(plan, pod, vr.Name)
		for _, m := range plan.Missing {
			sc.missing = append(sc.missing, v1.RestoreVolumeStatus{Pod: pod.Name, Volume: m.Volume, Phase: v1.RunFailed, Message: m.Message})
		}
		for _, m := range plan.NoBackup {
			sc.noBackup = append(sc.noBackup, m.Message)
		}
		for _, vp := range plan.Volumes {
			claim := claimOf(pod, vp.Volume)
			if by, ok := claims[claim]; claim != "" && ok && by.podUID != string(pod.UID) && !own[string(pod.UID)+"/"+vp.Volume] {
				sc.served = append(sc.served, v1.RestoreVolumeStatus{Pod: pod.Name, Volume: vp.Volume, PodVolumeRestore: by.name,
					Message: fmt.Sprintf("claim %s, which pod %s mounts too, is restored once, by PodVolumeRestore %s", claim, by.pod, by.name)})
				continue
			}
			if done[string(pod.UID)] {
				continue
			}
			pvr, err := r.newPodVolumeRestore(vr, pod, vp)
			if err != nil {
				return false, err
			}
			if claim != "" {
				if pvr.Annotations == nil {
					pvr.Annotations = map[string]string{}
				}
				pvr.Annotations[annotationClaim] = claim
				claims[claim] = claimRestore{name: pvr.Name, podUID: string(pod.UID), pod: pod.Name}
			}
			err = r.Create(ctx, pvr)
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return false, fmt.Errorf("creating PodVolumeRestore %s/%s: %w", pvr.Namespace, pvr.Name, err)
			}
			if err == nil && vp.Point.Dropped != "" {
				r.Recorder.Eventf(vr, nil, corev1.EventTypeWarning, ReasonFlaggedBackup, "Restore", "pod %s volume %s: %s", pod.Name, vp.Volume, vp.Point.Dropped)
				ctrl.LoggerFrom(ctx).Info("restoring a backup flagged FilesDropped", "pod", pod.Name, "volume", vp.Volume, "backup", vp.Point.BackupName)
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

// claimOf is the claim pod mounts as volume, "" when that volume is not a claim.
func claimOf(pod *corev1.Pod, volume string) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}

// notHeldMessage says, for status.volumes, why a pod's volume is left as it is.
func notHeldMessage(vr *v1.VolumeRestore, pod *corev1.Pod, now time.Time) string {
	why := "was created without waiting for it in restore-wait (the webhook did not hold it)"
	switch {
	case pod.CreationTimestamp.Before(&vr.CreationTimestamp):
		why = "was created before this restore"
	case pod.CreationTimestamp.Equal(&vr.CreationTimestamp):
		// Creation times have whole seconds.
		why = "was created before this restore or without waiting for it in restore-wait"
	case !now.Before(vr.PendingDeadlineOf()):
		why = "was created after spec.pendingDeadline, when this restore no longer holds new pods"
	}
	return fmt.Sprintf("not restored: pod %s %s, and spec.runningPods is Skip, so its running application's files are not overwritten; "+
		"set spec.runningPods: Overwrite in a new VolumeRestore to restore into it while it runs", pod.Name, why)
}

// restrictToWaited keeps only the volumes a pod's restore-wait init container waits
// for, when the webhook gave it one: a volume whose backup appeared after the pod
// started must not be restored under the running application.
func restrictToWaited(plan podPlan, pod *corev1.Pod, restore string) podPlan {
	waited, ok := restorewait.WaitedVolumes(pod)[restore]
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
			Paths:           vr.PathsOf(vp.Volume),
			SubPath:         vr.SubPathOf(),
		},
	}
	if pt.Dropped != "" {
		pvr.Annotations = map[string]string{annotationFlaggedBackup: pt.Dropped}
	}
	if err := controllerutil.SetControllerReference(vr, pvr, r.Scheme()); err != nil {
		return nil, err
	}
	return pvr, nil
}

// summarize aggregates the PodVolumeRestores into status (setRestoreStatus) and tells
// people when the restore ends.
func (r *VolumeRestoreReconciler) summarize(ctx context.Context, sc *scope) error {
	vr := sc.vr
	if sc.existing == nil {
		var existing v1.PodVolumeRestoreList
		if err := r.List(ctx, &existing, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr.Name)}); err != nil {
			return err
		}
		sc.existing = existing.Items
	}
	t := tallyRestores(sc.existing, sc.missing, sc.skipped, sc.served, sc.unscheduled)
	if sc.claims != nil {
		t.claimVolumes()
	}
	t.toCome = sc.toCome
	t.waitReason, t.waitMessage = waitingMessage(sc)
	previous := vr.Status.Phase
	setRestoreStatus(vr, t, sc.now)
	if vr.Status.Phase != previous && vr.Status.Phase.IsFinal() {
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
// WaitingForPods (pods created now wait for their data: an application may be
// applied), or BackupsNotAdopted when the store holds only backups of an earlier
// namespace of this name that it does not adopt, whose message says that those are
// not restored and how an administrator lets them be. The volumes of running pods it
// leaves alone are named first.
func waitingMessage(sc *scope) (reason, msg string) {
	reason, msg = waitingFor(sc)
	if len(sc.skipped) > 0 && sc.claims != nil {
		msg = fmt.Sprintf("left %d claim(s) that running pods use as they are (spec.runningPods is Skip); %s", len(sc.skipped), msg)
	} else if len(sc.skipped) > 0 {
		msg = fmt.Sprintf("left %d volume(s) of %d running pod(s) as they are (restore-wait does not hold them and spec.runningPods is Skip); %s",
			len(sc.skipped), sc.skippedPods, msg)
	}
	return reason, msg
}

func waitingFor(sc *scope) (reason, msg string) {
	if sc.claims != nil {
		return claimsWaitingFor(sc)
	}
	if sc.unscheduled > 0 {
		return ReasonWaitingForPods, fmt.Sprintf("waiting for %d matching pod(s) to be scheduled", sc.unscheduled)
	}
	if n := len(sc.pods) - sc.skippedPods; n > 0 {
		msg := fmt.Sprintf("%d matching pod(s) have no volume with a backup to restore", n)
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
		return ReasonBackupsNotAdopted, "waiting for pods matching spec.podSelector; " + earlierBackups(sourceNamespace(sc.vr), "", foreign) +
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
		if vr.Spec.ClaimSelector != nil {
			// Any pod may start to use a claim it restores, and its writer pods
			// belong to it; a finished one may still have writer pods to delete.
			if pod, ok := obj.(*corev1.Pod); !vr.Status.Phase.IsFinal() || ok && IsWriterPod(pod) {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vr)})
			}
			continue
		}
		if vr.Status.Phase.IsFinal() {
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
		if sourceNamespace(&vr) == ns && !vr.Status.Phase.IsFinal() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vr)})
		}
	}
	return reqs
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
