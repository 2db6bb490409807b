package restore

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The manager's claim pods: small pods that mount one claim and sleep (holdfast
// pause) so that the node agent can reach the claim through the kubelet's directory
// of a pod, as it reaches any pod volume. A reader pod mounts it read-only for a
// backup (controllers/policy); a writer pod mounts it read-write for a restore
// (claims.go). Both are built here, so they differ only where they must, and the
// admission policy config/admission/manager_pod_writes.yaml admits only these shapes.
const (
	// LabelComponent is app.kubernetes.io/component: ComponentReader or ComponentWriter.
	LabelComponent = "app.kubernetes.io/component"
	// ComponentReader marks the reader pods that back up a claim no pod uses.
	ComponentReader = "claim-reader"
	// ComponentWriter marks the writer pods that restore a claim no pod uses.
	ComponentWriter = "claim-writer"
	// ClaimPodVolume is the name of the claim's volume in a claim pod.
	ClaimPodVolume = "data"
	// AnnotationClaimPod, on a claim pod, names the claim it mounts.
	AnnotationClaimPod = "backup.holdfast.dev/claim"
	// PauseSubcommand is the holdfast command a claim pod runs: it sleeps until
	// SIGTERM.
	PauseSubcommand = "pause"
)

// ClaimPod says what is particular to one claim pod.
type ClaimPod struct {
	// Name and Namespace of the pod; the claim is in Namespace.
	Name, Namespace string
	// Claim is the PersistentVolumeClaim it mounts, at /data.
	Claim string
	// Component is ComponentReader (mounted read-only) or ComponentWriter.
	Component string
	// Labels are added to the managed-by and component labels.
	Labels map[string]string
	// Owner owns the pod (the policy of a reader, the restore of a writer).
	Owner metav1.OwnerReference
}

// IsClaimPod says whether pod is one of the manager's claim pods of component
// (ComponentReader or ComponentWriter): not an application pod, whatever it mounts.
func IsClaimPod(pod *corev1.Pod, component string) bool {
	return pod.Labels[v1.LabelManagedBy] == v1.ManagedByValue && pod.Labels[LabelComponent] == component
}

// ClaimPodName is <claim>-<role>-<hash of key and claim>, at most 63 characters: the
// same for the same key (a run, a restore's UID) and claim, so that a manager that
// restarts finds its pod again.
func ClaimPodName(role, key, claim string) string {
	sum := sha256.Sum256([]byte(key + "/" + claim))
	prefix := claim
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-.")
	}
	return prefix + "-" + role + "-" + hex.EncodeToString(sum[:])[:10]
}

// NewClaimPod builds claim pod c with the settings h (the restore helper's image,
// resources, security context, tolerations and priority class). It runs nothing but
// holdfast pause, has no service account token, and mounts only its claim: read-only
// for a reader. The restore webhook never holds it (there is nothing to restore into a
// pod that only holds a claim open). Which node it runs on is the scheduler's choice:
// a local volume's node affinity pins it there.
func NewClaimPod(c ClaimPod, h HelperPod) *corev1.Pod {
	readOnly := c.Component == ComponentReader
	labels := map[string]string{
		v1.LabelManagedBy: v1.ManagedByValue, LabelComponent: c.Component,
		LabelSkipRestoreWait: "true",
	}
	for k, v := range c.Labels {
		labels[k] = v
	}
	container := strings.TrimPrefix(c.Component, "claim-")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            c.Name,
			Namespace:       c.Namespace,
			Labels:          labels,
			Annotations:     map[string]string{AnnotationClaimPod: c.Claim},
			OwnerReferences: []metav1.OwnerReference{c.Owner},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			PriorityClassName:             h.PriorityClassName,
			Tolerations:                   h.Tolerations,
			Containers: []corev1.Container{{
				Name:            container,
				Image:           h.Image,
				Args:            []string{PauseSubcommand},
				Resources:       h.Resources,
				SecurityContext: h.SecurityContext,
				VolumeMounts:    []corev1.VolumeMount{{Name: ClaimPodVolume, MountPath: "/data", ReadOnly: readOnly}},
			}},
			Volumes: []corev1.Volume{{Name: ClaimPodVolume, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Claim, ReadOnly: readOnly}}}},
		},
	}
}

// ClaimPodRunning says whether a reader or writer pod runs on its node and is not
// being deleted: only then may a backup or restore use it.
func ClaimPodRunning(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && pod.Spec.NodeName != "" && pod.DeletionTimestamp.IsZero()
}

// ClaimPodWaiting says what a claim pod that does not run is stuck on; onNodeHint is
// added when it is scheduled and nothing more is known.
func ClaimPodWaiting(pod *corev1.Pod, onNodeHint string) string {
	msg := string(pod.Status.Phase)
	if msg == "" {
		msg = "not scheduled"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
			return msg + ", not scheduled: " + c.Message
		}
	}
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			return msg + ", " + w.Reason + ": " + w.Message
		}
	}
	if pod.Spec.NodeName != "" {
		return msg + " on node " + pod.Spec.NodeName + onNodeHint
	}
	return msg
}
