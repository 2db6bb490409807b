package restore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// A restore with spec.claimSelector restores claims rather than pods: each selected
// bound claim from the backups of its own chain (/pvc/<claim>). A claim no running pod
// uses is written through a writer pod: the manager starts it (NewClaimPod, the claim
// mounted read-write, holdfast pause), creates the claim's PodVolumeRestore for it once
// it runs, and deletes it when that restore ends. Writer pods are named after the
// restore's UID and the claim and labelled with the restore, so a manager that
// restarts finds them again (cleanWriters). A claim that a running pod uses is left as
// it is (ClaimInUse), unless spec.runningPods is Overwrite: then it is restored
// through that pod, as a podSelector restore overwrites a running pod.

// ReasonClaimInUse, on a claim in status.volumes: a running pod uses it and
// spec.runningPods is Skip, so it is left as it is.
const ReasonClaimInUse = "ClaimInUse"

// DefaultClaimPodStartTimeout is how long a reader or writer pod may take to run
// before its claim fails.
const DefaultClaimPodStartTimeout = 2 * time.Minute

// ClaimPodOptions say where the manager's claim pods (the reader pods of backups, the
// writer pods of restores) get their settings from.
type ClaimPodOptions struct {
	// Namespace is the operator namespace, where the ConfigMap HelperConfigMapName
	// configures the pods.
	Namespace string
	// Image is the default image (--restore-helper-image): its entrypoint is holdfast.
	Image string
	// StartTimeout is how long a claim pod may take to run before its claim fails; 0
	// is DefaultClaimPodStartTimeout.
	StartTimeout time.Duration
}

// StartDeadline is StartTimeout, or its default.
func (o ClaimPodOptions) StartDeadline() time.Duration {
	if o.StartTimeout <= 0 {
		return DefaultClaimPodStartTimeout
	}
	return o.StartTimeout
}

// IsWriterPod says whether pod is one of Holdfast's writer pods.
func IsWriterPod(pod *corev1.Pod) bool { return IsClaimPod(pod, ComponentWriter) }

// writerPodName is the writer pod of claim in restore vr.
func writerPodName(vr *v1.VolumeRestore, claim string) string {
	return ClaimPodName("writer", string(vr.UID), claim)
}

// claimScope is what selectClaims found for a claim restore.
type claimScope struct {
	claims []corev1.PersistentVolumeClaim
	// pods are the live pods of the namespace (application, reader and writer pods).
	pods []corev1.Pod
	// waiting says, claim by claim, what the restore waits for.
	waiting []string
	// inUse are the claims left as they are this pass because a running pod uses them.
	inUse map[string]bool
}

// selectClaims lists the claims the restore targets, the pods of its namespace and
// the backups of the source namespace. Sets Stalled on a selector that does not parse.
func (r *VolumeRestoreReconciler) selectClaims(ctx context.Context, sc *scope) (bool, error) {
	vr := sc.vr
	sel, err := metav1.LabelSelectorAsSelector(vr.Spec.ClaimSelector)
	if err != nil {
		r.stall(vr, ReasonInvalidSelector, "spec.claimSelector: "+err.Error())
		return true, nil
	}
	cs := &claimScope{inUse: map[string]bool{}}
	var claims corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &claims, client.InNamespace(vr.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return false, fmt.Errorf("listing the claims of VolumeRestore %s/%s: %w", vr.Namespace, vr.Name, err)
	}
	cs.claims = claims.Items
	slices.SortFunc(cs.claims, func(a, b corev1.PersistentVolumeClaim) int { return strings.Compare(a.Name, b.Name) })
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(vr.Namespace)); err != nil {
		return false, fmt.Errorf("listing the pods of namespace %s: %w", vr.Namespace, err)
	}
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp.IsZero() && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			cs.pods = append(cs.pods, pod)
		}
	}
	sc.claims = cs
	if sc.src, err = r.sources(ctx, vr); err != nil {
		return false, err
	}
	var existing v1.PodVolumeRestoreList
	if err := r.List(ctx, &existing, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr.Name)}); err != nil {
		return false, fmt.Errorf("listing the PodVolumeRestores of %s/%s: %w", vr.Namespace, vr.Name, err)
	}
	sc.existing = existing.Items
	return false, nil
}

// createClaimRestores decides, claim by claim, what the restore does: nothing more
// for a claim that has its PodVolumeRestore; wait for a claim that is not bound (until
// spec.pendingDeadline, then it fails); leave a claim a running pod uses (ClaimInUse,
// once and for good) or, under runningPods: Overwrite, restore it through that pod;
// otherwise start the claim's writer pod and, once it runs, create the claim's
// PodVolumeRestore for it. A writer pod that does not run within the start timeout
// fails the claim, with what it is stuck on.
func (r *VolumeRestoreReconciler) createClaimRestores(ctx context.Context, sc *scope) (bool, error) {
	vr, cs := sc.vr, sc.claims
	restored := map[string]bool{}
	for _, pvr := range sc.existing {
		restored[pvr.Annotations[annotationClaim]] = true
	}
	named := map[string]bool{}
	for _, v := range vr.Spec.Volumes {
		named[v.Name] = true
	}
	// A claim left ClaimInUse stays so: the restore never writes it later, when the
	// pod has gone, under data the application may have changed since.
	skippedBefore := map[string]bool{}
	for _, st := range vr.Status.Volumes {
		if st.Reason == ReasonClaimInUse {
			skippedBefore[st.Claim] = true
		}
	}
	pastDeadline := !sc.now.Before(vr.PendingDeadlineOf())
	found := map[string]bool{}
	created := 0
	for i := range cs.claims {
		pvc := &cs.claims[i]
		claim := pvc.Name
		if len(named) > 0 && !named[claim] {
			continue
		}
		found[claim] = true
		if restored[claim] {
			continue
		}
		firstConsumer, err := r.waitsForFirstConsumer(ctx, pvc)
		if err != nil {
			return false, err
		}
		if pvc.Status.Phase != corev1.ClaimBound && !firstConsumer || !pvc.DeletionTimestamp.IsZero() {
			why, wait := fmt.Sprintf("claim %s is not bound (phase %s)", claim, claimPhase(pvc)),
				fmt.Sprintf("claim %s to be bound (phase %s)", claim, claimPhase(pvc))
			if !pvc.DeletionTimestamp.IsZero() {
				why, wait = fmt.Sprintf("claim %s is being deleted", claim), fmt.Sprintf("claim %s, being deleted, to be made again", claim)
			}
			if pastDeadline {
				sc.missing = append(sc.missing, claimFailed(claim, why+" at spec.pendingDeadline; only bound claims, and claims of a WaitForFirstConsumer StorageClass, are restored"))
			} else {
				cs.waiting = append(cs.waiting, wait)
			}
			continue
		}
		rs := sourceOf(vr, claim)
		path := identity.ClaimSourcePath(claim)
		if from := vr.FromOf(claim); from != "" {
			path = from
		}
		point, why := choose(vr, rs, path, sc.src)
		if point == nil {
			msg := fmt.Sprintf("claim %s: %s", claim, why)
			if len(named) > 0 {
				sc.missing = append(sc.missing, claimFailed(claim, msg))
			} else {
				sc.noBackup = append(sc.noBackup, msg)
			}
			continue
		}
		vp := volumePlan{SourcePath: path, Point: point}
		heldHere := func(pod *corev1.Pod) bool { return restorewait.Holds(pod, string(vr.UID)) }
		app, volume := applicationUsing(cs.pods, claim, func(pod *corev1.Pod) bool { return !heldHere(pod) })
		// The pod to restore through: a running one (under Overwrite), else one that
		// restore-wait holds for this restore before any writer pod restored the claim,
		// as a podSelector restore restores its held pods.
		through, throughVolume := app, volume
		if app == nil {
			through, throughVolume = applicationUsing(cs.pods, claim, heldHere)
		}
		switch {
		case app != nil && skippedBefore[claim] || app != nil && !r.overwrites(sc):
			cs.inUse[claim] = true
			sc.skipped = append(sc.skipped, v1.RestoreVolumeStatus{Pod: app.Name, Claim: claim, Volume: claim, SnapshotID: point.SnapshotID,
				Reason: ReasonClaimInUse, Message: fmt.Sprintf("not restored: pod %s uses claim %s, and spec.runningPods is Skip, so its running application's files are not overwritten; "+
					"stop the application (scale it to zero) and create a new VolumeRestore, or set spec.runningPods: Overwrite to restore through that pod", app.Name, claim)})
			sc.skippedPods++
			continue
		case skippedBefore[claim]:
			// Its pod is gone, but it was left for good (see above).
			sc.skipped = append(sc.skipped, previousSkip(vr, claim))
			sc.skippedPods++
			continue
		case through != nil && through.Spec.NodeName == "":
			cs.waiting = append(cs.waiting, fmt.Sprintf("pod %s, which uses claim %s, to be scheduled", through.Name, claim))
			continue
		case through != nil:
			vp.Volume = throughVolume
			pvr, err := r.createClaimRestore(ctx, vr, through, claim, vp)
			if err != nil {
				return false, err
			}
			sc.existing = append(sc.existing, *pvr)
			created++
			continue
		}
		if reader := claimPodUsing(cs.pods, claim, ComponentReader); reader != nil {
			// A backup reads the claim: the restore waits until its reader pod is gone.
			cs.waiting = append(cs.waiting, fmt.Sprintf("reader pod %s of a backup of claim %s to end", reader.Name, claim))
			continue
		}
		pod, waitWhy, failWhy, err := r.ensureWriter(ctx, sc, pvc, pastDeadline)
		switch {
		case err != nil:
			return false, err
		case failWhy != "":
			sc.missing = append(sc.missing, claimFailed(claim, failWhy))
			continue
		case pod == nil:
			if waitWhy != "" {
				cs.waiting = append(cs.waiting, waitWhy)
			}
			continue
		}
		vp.Volume = ClaimPodVolume
		pvr, err := r.createClaimRestore(ctx, vr, pod, claim, vp)
		if err != nil {
			return false, err
		}
		sc.existing = append(sc.existing, *pvr)
		created++
	}
	for _, v := range vr.Spec.Volumes {
		if found[v.Name] {
			continue
		}
		why := fmt.Sprintf("claim %s is not among the claims spec.claimSelector selects in namespace %s (it does not exist, or lacks the labels)", v.Name, vr.Namespace)
		if pastDeadline {
			sc.missing = append(sc.missing, claimFailed(v.Name, why+" at spec.pendingDeadline"))
		} else {
			cs.waiting = append(cs.waiting, why)
		}
	}
	// Every claim still waited for keeps the restore going (or Pending).
	sc.unscheduled += len(cs.waiting)
	if created > 0 && vr.Status.StartTime == nil {
		now := metav1.Now()
		vr.Status.StartTime = &now
		r.Recorder.Eventf(vr, nil, corev1.EventTypeNormal, "RestoreStarted", "Restore", "restoring %d claim(s)", created)
	}
	return false, nil
}

// createClaimRestore creates the PodVolumeRestore of claim through pod (its writer
// pod, or under Overwrite the running pod that uses it).
func (r *VolumeRestoreReconciler) createClaimRestore(ctx context.Context, vr *v1.VolumeRestore, pod *corev1.Pod, claim string, vp volumePlan) (*v1.PodVolumeRestore, error) {
	pvr, err := r.newPodVolumeRestore(vr, pod, vp)
	if err != nil {
		return nil, err
	}
	if pvr.Annotations == nil {
		pvr.Annotations = map[string]string{}
	}
	pvr.Annotations[annotationClaim] = claim
	// Under claimSelector, spec.volumes[] names claims.
	pvr.Spec.Paths = vr.PathsOf(claim)
	if err := r.Create(ctx, pvr); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating PodVolumeRestore %s/%s: %w", pvr.Namespace, pvr.Name, err)
	}
	if vp.Point.Dropped != "" {
		r.Recorder.Eventf(vr, nil, corev1.EventTypeWarning, ReasonFlaggedBackup, "Restore", "claim %s: %s", claim, vp.Point.Dropped)
	}
	ctrl.LoggerFrom(ctx).Info("restoring a claim", "claim", claim, "pod", pod.Name, "snapshot", vp.Point.SnapshotID)
	return pvr, nil
}

// waitsForFirstConsumer says whether pvc is a Pending claim that only a pod's
// scheduling binds: its StorageClass has volumeBindingMode WaitForFirstConsumer, as
// the classes of most dynamic provisioners and of local volumes do. Such a claim,
// made again for an application that is not running yet, is bound by its writer pod,
// the claim's first consumer, as VolSync's mover pods bind theirs.
func (r *VolumeRestoreReconciler) waitsForFirstConsumer(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (bool, error) {
	class := ptr.Deref(pvc.Spec.StorageClassName, "")
	if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" || class == "" {
		return false, nil
	}
	reader := client.Reader(r.Client)
	if r.APIReader != nil {
		// One read per pass of a claim that waits: no StorageClass informer for it.
		reader = r.APIReader
	}
	sc := &storagev1.StorageClass{}
	switch err := reader.Get(ctx, client.ObjectKey{Name: class}, sc); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading StorageClass %s of claim %s/%s: %w", class, pvc.Namespace, pvc.Name, err)
	}
	return ptr.Deref(sc.VolumeBindingMode, storagev1.VolumeBindingImmediate) == storagev1.VolumeBindingWaitForFirstConsumer, nil
}

// ensureWriter creates the writer pod of claim pvc unless it exists (or the pending
// deadline passed: a restore that started nothing takes no new claim), and returns
// it when it runs on a node. Otherwise waitWhy says what it waits for, or failWhy,
// once the writer pod did not run within the start timeout, why the claim fails.
func (r *VolumeRestoreReconciler) ensureWriter(ctx context.Context, sc *scope, pvc *corev1.PersistentVolumeClaim, pastDeadline bool) (pod *corev1.Pod, waitWhy, failWhy string, err error) {
	vr := sc.vr
	pod = &corev1.Pod{}
	key := client.ObjectKey{Namespace: vr.Namespace, Name: writerPodName(vr, pvc.Name)}
	err = r.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		// Created in an earlier pass that the cache has not seen yet: never twice.
		err = r.APIReader.Get(ctx, key, pod)
	}
	switch {
	case apierrors.IsNotFound(err) && pastDeadline:
		return nil, "", "", nil
	case apierrors.IsNotFound(err):
		h, warnings, err := ReadHelperPod(ctx, r.APIReader, r.Writer.Namespace, r.Writer.Image)
		if err != nil {
			return nil, "", "", err
		}
		for _, w := range warnings {
			r.Recorder.Eventf(vr, nil, corev1.EventTypeWarning, "WriterConfigIgnored", "Restore", "%s", w)
		}
		pod = newWriterPod(vr, pvc, h)
		if err := r.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, "", "", fmt.Errorf("creating writer pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		r.Recorder.Eventf(vr, nil, corev1.EventTypeNormal, "WriterPodStarted", "Restore", "started writer pod %s to restore claim %s, which no pod uses", pod.Name, pvc.Name)
		return nil, fmt.Sprintf("writer pod %s of claim %s to run", pod.Name, pvc.Name), "", nil
	case err != nil:
		return nil, "", "", fmt.Errorf("reading writer pod %s: %w", key, err)
	}
	if ClaimPodRunning(pod) {
		return pod, "", "", nil
	}
	stuck := ClaimPodWaiting(pod, "")
	timeout := r.Writer.StartDeadline()
	if sc.now.Sub(pod.CreationTimestamp.Time) >= timeout {
		return nil, "", fmt.Sprintf("claim %s was not restored: its writer pod %s did not run within %s (%s)", pvc.Name, pod.Name, timeout, stuck), nil
	}
	return nil, fmt.Sprintf("writer pod %s of claim %s to run (%s)", pod.Name, pvc.Name, stuck), "", nil
}

// newWriterPod is the writer pod of claim pvc in restore vr: owned by the restore (so
// it goes with it), labelled with it.
func newWriterPod(vr *v1.VolumeRestore, pvc *corev1.PersistentVolumeClaim, h HelperPod) *corev1.Pod {
	return NewClaimPod(ClaimPod{
		Name: writerPodName(vr, pvc.Name), Namespace: vr.Namespace, Claim: pvc.Name,
		Component: ComponentWriter,
		Labels:    map[string]string{v1.LabelRestore: identity.LabelValue(vr.Name)},
		Owner: metav1.OwnerReference{APIVersion: v1.GroupVersion.String(), Kind: "VolumeRestore", Name: vr.Name, UID: vr.UID,
			Controller: ptr.To(true)},
	}, h)
}

// cleanWriters deletes the restore's writer pods that are no longer needed, found by
// their labels so that a restarted manager finds them too: one whose
// PodVolumeRestore ended, one whose claim a running pod now uses before its restore
// started, and, once the restore has ended (final), every one. Sets no condition.
func (r *VolumeRestoreReconciler) cleanWriters(ctx context.Context, sc *scope, final bool) error {
	vr := sc.vr
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr.Name), LabelComponent: ComponentWriter}); err != nil {
		return fmt.Errorf("listing the writer pods of VolumeRestore %s/%s: %w", vr.Namespace, vr.Name, err)
	}
	byPod := map[string]*v1.PodVolumeRestore{}
	restoredBy := map[string]string{} // claim: the pod its PodVolumeRestore writes through
	for i := range sc.existing {
		byPod[sc.existing[i].Spec.Pod.UID] = &sc.existing[i]
		if claim := sc.existing[i].Annotations[annotationClaim]; claim != "" {
			restoredBy[claim] = sc.existing[i].Spec.Pod.Name
		}
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !IsWriterPod(pod) || !pod.DeletionTimestamp.IsZero() || !ownedBy(pod, vr) {
			continue
		}
		claim := pod.Annotations[AnnotationClaimPod]
		pvr := byPod[string(pod.UID)]
		var why string
		switch {
		case pvr != nil && restoreEnded(pvr.Status.Phase):
			why = "its restore ended " + string(pvr.Status.Phase)
		case final:
			why = "the restore ended " + string(vr.Status.Phase)
		case pvr == nil && sc.claims != nil && sc.claims.inUse[claim]:
			why = "a pod of the application uses claim " + claim
		case pvr == nil && restoredBy[claim] != "":
			why = fmt.Sprintf("claim %s is restored through pod %s, which waits for it", claim, restoredBy[claim])
		default:
			continue
		}
		if err := r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting writer pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		r.Recorder.Eventf(vr, nil, corev1.EventTypeNormal, "WriterPodDeleted", "Restore", "deleted writer pod %s of claim %s: %s", pod.Name, claim, why)
	}
	return nil
}

// ownedBy says whether pod belongs to this very restore (not to an earlier one of the
// same name).
func ownedBy(pod *corev1.Pod, vr *v1.VolumeRestore) bool {
	for _, o := range pod.OwnerReferences {
		if o.UID == vr.UID {
			return true
		}
	}
	return false
}

// applicationUsing is a pod among pods for which which holds, not a claim pod of
// Holdfast, that mounts claim, and the name of its volume; nil when none does.
func applicationUsing(pods []corev1.Pod, claim string, which func(*corev1.Pod) bool) (*corev1.Pod, string) {
	for i := range pods {
		pod := &pods[i]
		if IsClaimPod(pod, ComponentReader) || IsClaimPod(pod, ComponentWriter) || !which(pod) {
			continue
		}
		for i := range pod.Spec.Volumes {
			if identity.ClaimName(pod, &pod.Spec.Volumes[i]) == claim {
				return pod, pod.Spec.Volumes[i].Name
			}
		}
	}
	return nil, ""
}

// claimPodUsing is a claim pod of component among pods that mounts claim, or nil.
func claimPodUsing(pods []corev1.Pod, claim, component string) *corev1.Pod {
	for i := range pods {
		if IsClaimPod(&pods[i], component) && pods[i].Annotations[AnnotationClaimPod] == claim {
			return &pods[i]
		}
	}
	return nil
}

// previousSkip is the ClaimInUse entry of claim in vr's status.
func previousSkip(vr *v1.VolumeRestore, claim string) v1.RestoreVolumeStatus {
	for _, st := range vr.Status.Volumes {
		if st.Claim == claim && st.Reason == ReasonClaimInUse {
			return st
		}
	}
	return v1.RestoreVolumeStatus{Claim: claim, Volume: claim, Reason: ReasonClaimInUse}
}

// claimFailed is the status of a claim that cannot be restored, with why.
func claimFailed(claim, why string) v1.RestoreVolumeStatus {
	return v1.RestoreVolumeStatus{Claim: claim, Volume: claim, Phase: v1.RunFailed, Message: boundMessage(why)}
}

func claimPhase(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Status.Phase == "" {
		return string(corev1.ClaimPending)
	}
	return string(pvc.Status.Phase)
}

// restoreEnded says whether a PodVolumeRestore in phase p has ended.
func restoreEnded(p v1.RunPhase) bool {
	return p == v1.RunCompleted || p == v1.RunFailed || p == v1.RunCanceled
}

// claimRestoresOf lists the unfinished claim restores of a claim's namespace.
func (r *VolumeRestoreReconciler) claimRestoresOf(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1.VolumeRestoreList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, vr := range list.Items {
		if vr.Spec.ClaimSelector != nil && !vr.Status.Phase.IsFinal() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vr)})
		}
	}
	return reqs
}

// claimsWaitingFor says why a claim restore has restored nothing yet.
func claimsWaitingFor(sc *scope) (reason, msg string) {
	cs := sc.claims
	switch {
	case len(cs.waiting) > 0:
		return ReasonWaitingForPods, "waiting for " + strings.Join(first(cs.waiting, 3), "; ")
	case len(sc.noBackup) > 0:
		return ReasonWaitingForPods, fmt.Sprintf("%d selected claim(s) have no backup to restore: %s", len(sc.noBackup), strings.Join(first(sc.noBackup, 2), "; "))
	case len(sc.src.waiting) > 0:
		return ReasonReadingStore, "reading the store: " + strings.Join(sc.src.waiting, "; ")
	case len(sc.skipped) > 0:
		return ReasonWaitingForPods, "every selected claim is used by a running pod"
	}
	return ReasonWaitingForPods, "waiting for bound claims matching spec.claimSelector"
}

// claimVolumes names the entries of a claim restore by claim: the claim of each
// PodVolumeRestore (its annotation) is its claim and volume.
func (t *restoreTally) claimVolumes() {
	t.claims = true
	for i := range t.volumes {
		v := &t.volumes[i]
		if v.Claim != "" {
			continue
		}
		if claim := t.claimOf[v.PodVolumeRestore]; claim != "" {
			v.Claim, v.Volume = claim, claim
		}
	}
}
