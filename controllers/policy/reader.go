package policy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// A claim no pod uses is backed up through a reader pod: a small pod the manager
// starts in the claim's namespace that mounts the claim read-only and sleeps
// (holdfast pause). Once it runs, the run creates the claim's PodVolumeBackup for it,
// and the agent of its node backs the claim up from the kubelet's directory of the
// pod as any pod volume. Everything about a reader pod is in its labels and name, so
// a manager that restarts finds them again (reconcileReaders).
const (
	// LabelComponent is app.kubernetes.io/component; reader pods have ComponentReader.
	LabelComponent = restore.LabelComponent
	// ComponentReader marks Holdfast's reader pods.
	ComponentReader = restore.ComponentReader
	// AnnotationCancelReason on a PodVolumeBackup says why the manager canceled it;
	// the run reports it for the Canceled volume.
	AnnotationCancelReason = "backup.holdfast.dev/cancel-reason"
	// readerVolume is the name of the claim's volume in a reader pod.
	readerVolume = restore.ClaimPodVolume
	// PauseSubcommand is the holdfast command a reader pod runs: it sleeps until
	// SIGTERM.
	PauseSubcommand = restore.PauseSubcommand
)

// IsReaderPod says whether pod is one of Holdfast's reader pods: not an application
// pod, whatever claim it mounts.
func IsReaderPod(pod *corev1.Pod) bool {
	return restore.IsClaimPod(pod, ComponentReader)
}

// readerPodName is the reader pod of a claim in one run: <claim>-reader-<hash of run
// and claim>, at most 63 characters.
func readerPodName(run, claim string) string {
	return restore.ClaimPodName("reader", run, claim)
}

// backupName is the name of a target's PodVolumeBackup in run.
func backupName(run string, t target) string {
	if t.unmounted != nil {
		return identity.PodVolumeBackupName(run, readerPodName(run, t.claim), readerVolume)
	}
	return identity.PodVolumeBackupName(run, t.pod.Name, t.volume)
}

// readerSettings reads the reader pod's settings: the restore helper's container
// settings (image, resources, security context) and the readerTolerations and
// readerPriorityClassName keys of the same ConfigMap. A value that does not parse
// keeps the default; the warnings say which.
func (r *VolumeBackupPolicyReconciler) readerSettings(ctx context.Context) (restore.HelperPod, []string, error) {
	return restore.ReadHelperPod(ctx, r.APIReader, r.Reader.Namespace, r.Reader.Image)
}

// newReaderPod is the reader pod of claim pvc in run of policy p.
func newReaderPod(p *v1.VolumeBackupPolicy, run string, pvc *corev1.PersistentVolumeClaim, h restore.HelperPod) *corev1.Pod {
	return restore.NewClaimPod(restore.ClaimPod{
		Name: readerPodName(run, pvc.Name), Namespace: pvc.Namespace, Claim: pvc.Name,
		Component: ComponentReader,
		Labels:    map[string]string{v1.LabelPolicy: policyLabel(p.Name), v1.LabelRun: run},
		// The policy, cluster-scoped, owns it: the PodVolumeBackup cannot, as it names
		// the pod's UID and so comes after it. reconcileReaders deletes it once its
		// backup ends.
		Owner: metav1.OwnerReference{APIVersion: v1.GroupVersion.String(), Kind: "VolumeBackupPolicy", Name: p.Name, UID: p.UID},
	}, h)
}

// annotationClaim on a reader pod names the claim it reads.
const annotationClaim = restore.AnnotationClaimPod

// ensureReader creates the reader pod of target t in run unless it exists (or create
// is false: the run's deadline passed), and returns it when it runs on a node;
// otherwise why says, in words, what it waits for.
func (r *VolumeBackupPolicyReconciler) ensureReader(ctx context.Context, s *scope, run string, t target, create bool) (pod *corev1.Pod, why string, err error) {
	pod = &corev1.Pod{}
	key := client.ObjectKey{Namespace: t.pod.Namespace, Name: readerPodName(run, t.claim)}
	err = r.Get(ctx, key, pod)
	switch {
	case apierrors.IsNotFound(err) && !create:
		return nil, "", nil
	case apierrors.IsNotFound(err):
		h, warnings, err := r.readerSettings(ctx)
		if err != nil {
			return nil, "", err
		}
		for _, w := range warnings {
			r.event(ctx, s.policy, corev1.EventTypeWarning, "ReaderConfigIgnored", "%s", w)
		}
		pod = newReaderPod(s.policy, run, t.unmounted, h)
		if err := r.Create(ctx, pod, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, "", fmt.Errorf("creating reader pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		return nil, "created", nil
	case err != nil:
		return nil, "", fmt.Errorf("reading reader pod %s: %w", key, err)
	}
	if restore.ClaimPodRunning(pod) {
		return pod, "", nil
	}
	return nil, restore.ClaimPodWaiting(pod, ": is a ReadWriteOnce volume attached to another node?"), nil
}

// readerNotRun is the failure of a claim whose reader pod did not run in time.
func readerNotRun(t target, run string, timeout time.Duration, why string) string {
	msg := fmt.Sprintf("%s: claim %s was not backed up: its reader pod %s did not run within %s", t.key(), t.claim, readerPodName(run, t.claim), timeout)
	if why != "" {
		msg += " (" + why + ")"
	}
	return msg
}

// reconcileReaders ends the policy's reader pods that are no longer needed, found by
// their labels so that a restarted manager finds them too: one whose backup ended or
// is gone (or never came, once its run stopped creating), and at once one whose claim
// a pod of the application now uses. That pod wins: the reader's backup is canceled
// (spec.cancel, with the reason in an annotation) so that a ReadWriteOnce claim is
// never held from its application. Sets no condition.
func (r *VolumeBackupPolicyReconciler) reconcileReaders(ctx context.Context, s *scope) error {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingLabels{v1.LabelPolicy: policyLabel(s.policy.Name), LabelComponent: ComponentReader}); err != nil {
		return fmt.Errorf("listing reader pods: %w", err)
	}
	creatingRun := ""
	if run := s.policy.Status.LastRun; run != nil && run.Outcome == v1.RunOutcomeInProgress && run.CreationEndTime == nil {
		creatingRun = run.Name
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !IsReaderPod(pod) || pod.DeletionTimestamp != nil {
			continue
		}
		run := pod.Labels[v1.LabelRun]
		name := identity.PodVolumeBackupName(run, pod.Name, readerVolume)
		backup := s.backups[pod.Namespace+"/"+name]
		exists := backup != nil || s.created[pod.Namespace+"/"+name]
		claim := pod.Annotations[annotationClaim]
		var why string
		switch app := s.appUsing(pod.Namespace, claim); {
		case app != nil:
			why = fmt.Sprintf("pod %s of the application started and uses claim %s", app.Name, claim)
			if backup != nil && !finished(backup.Status.Phase) {
				if err := r.cancelForApp(ctx, backup, why); err != nil {
					return err
				}
			}
		case backup != nil && finished(backup.Status.Phase):
			why = "its backup ended " + string(backup.Status.Phase)
		case !exists && run != creatingRun && !r.backupInAPI(ctx, pod.Namespace, name):
			why = "it has no backup and run " + run + " is not starting volumes"
		default:
			continue
		}
		if err := r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting reader pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		r.event(ctx, s.policy, corev1.EventTypeNormal, "ReaderPodDeleted", "deleted reader pod %s/%s of claim %s: %s", pod.Namespace, pod.Name, claim, why)
	}
	return nil
}

// backupInAPI says whether the API server holds PodVolumeBackup ns/name: the cache
// may not have seen one created in an earlier pass yet (the event of the policy's own
// status update can come first), and deleting its reader pod would fail it. An error
// counts as held: the next pass decides.
func (r *VolumeBackupPolicyReconciler) backupInAPI(ctx context.Context, ns, name string) bool {
	if r.APIReader == nil {
		return false
	}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1.PodVolumeBackup{})
	return !apierrors.IsNotFound(err)
}

// cancelForApp cancels a reader pod's backup because the application started.
func (r *VolumeBackupPolicyReconciler) cancelForApp(ctx context.Context, b *v1.PodVolumeBackup, why string) error {
	if b.Spec.Cancel {
		return nil
	}
	patch := client.MergeFrom(b.DeepCopy())
	b = b.DeepCopy()
	b.Spec.Cancel = true
	if b.Annotations == nil {
		b.Annotations = map[string]string{}
	}
	b.Annotations[AnnotationCancelReason] = why
	if err := r.Patch(ctx, b, patch, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("canceling PodVolumeBackup %s/%s: %w", b.Namespace, b.Name, err)
	}
	return nil
}

// appUsing is a live pod, not a reader pod, that references claim in ns, or nil.
func (s *scope) appUsing(ns, claim string) *corev1.Pod {
	if s.snap == nil || claim == "" {
		return nil
	}
	for _, pod := range s.snap.pods[ns] {
		if !live(pod) || IsReaderPod(pod) {
			continue
		}
		for i := range pod.Spec.Volumes {
			if identity.ClaimName(pod, &pod.Spec.Volumes[i]) == claim {
				return pod
			}
		}
	}
	return nil
}
