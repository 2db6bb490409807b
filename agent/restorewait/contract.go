package restorewait

import (
	"encoding/json"
	"path"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The restore-wait contract between the pod webhook and the restore controller (which
// make and read the init container), the agent (which writes the markers) and the
// restore-wait subcommand (which reads them). Every side names these through this
// package, never as a literal of its own.
const (
	// ContainerName is the name of the init container (with -2, -3, ... when two
	// restores hold one pod).
	ContainerName = "holdfast-restore-wait"
	// Subcommand is the holdfast subcommand the init container runs.
	Subcommand = "restore-wait"
	// MountRoot is where the init container mounts the volumes it waits for, each at
	// MountRoot/<volume name>.
	MountRoot = "/holdfast-restore"
	// AnnotationClaim, on a PodVolumeRestore, names the claim it restores: the other
	// pods of its restore that mount that claim are served by it (the restore
	// controller makes no PodVolumeRestore of their own for it), and the agent writes
	// their markers too.
	AnnotationClaim = "backup.holdfast.dev/claim"
	// Annotation, on a pod, maps each VolumeRestore name that holds the pod to the
	// volumes its restore-wait waits for (JSON: {"<restore>":["<volume>",...]}).
	Annotation = v1.AnnotationRestoreWait

	// SchedulingGate, on a pod, holds it unscheduled while a restore that selects it
	// cannot say yet which of its volumes to wait for (it is still reading the store,
	// or it is about to be created with the pod's namespace). The restore controller
	// then lets the pod's controller create it again, now with restore-wait, or
	// removes the gate.
	SchedulingGate = "backup.holdfast.dev/restore-planning"

	// FlagRestoreUID names the VolumeRestore (by UID) whose markers to wait for.
	FlagRestoreUID = "restore-uid"
	// FlagVolume is the mount path of one volume to wait for (repeated).
	FlagVolume = "volume"
	// FlagDeadline is how long restore-wait waits before it gives up (0: no limit).
	FlagDeadline = "deadline"
	// EnvPodUID is the environment variable through which restore-wait learns the UID
	// of its pod (the downward API's metadata.uid: the webhook cannot know it, as the
	// API server sets it after admission). With it, restore-wait waits for the markers
	// of its pod (MarkerName), so that every pod on a claim that one PodVolumeRestore
	// restores is released by that restore, each removing only its own marker.
	EnvPodUID = "HOLDFAST_POD_UID"
)

// MarkerName is the name, in MarkerDir, of the done-marker of restoreUID for the pod
// with UID podUID: <restore uid>.<pod uid>, or <restore uid> for a restore-wait that
// does not know its pod (made before EnvPodUID). The failure marker adds FailedSuffix.
func MarkerName(restoreUID, podUID string) string {
	if podUID == "" {
		return restoreUID
	}
	return restoreUID + "." + podUID
}

// MarkerPodUID is the pod UID the agent names pod's markers for restoreUID after
// (MarkerName): the pod's UID when its restore-wait for restoreUID reads EnvPodUID,
// "" when it does not (a pod admitted before restore-wait learnt its pod UID).
func MarkerPodUID(pod *corev1.Pod, restoreUID string) string {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if UIDOf(c) != restoreUID || restoreUID == "" {
			continue
		}
		for _, e := range c.Env {
			if e.Name == EnvPodUID && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.uid" {
				return string(pod.UID)
			}
		}
	}
	return ""
}

// DefaultDeadline is how long restore-wait waits for its volumes unless the
// restore-helper ConfigMap's key deadline says otherwise: long enough for a large
// restore queued behind a backup on its node, short enough that a pod whose restore
// will never come says so the same day.
const DefaultDeadline = 6 * time.Hour

// MountPath is where the init container mounts volume.
func MountPath(volume string) string {
	return path.Join(MountRoot, volume)
}

// Args are the init container's arguments: wait for restoreUID's markers in volumes
// (mounted at MountPath), for at most deadline (0: no limit).
func Args(restoreUID string, volumes []string, deadline time.Duration) []string {
	args := []string{Subcommand, "--" + FlagRestoreUID, restoreUID}
	for _, v := range volumes {
		args = append(args, "--"+FlagVolume, MountPath(v))
	}
	if deadline > 0 {
		args = append(args, "--"+FlagDeadline, deadline.String())
	}
	return args
}

// Container is the restore-wait init container named name that waits for restoreUID's
// markers in volumes of the pod (those of its own pod: it reads its pod's UID from
// EnvPodUID), with the image, resources and securityContext given
// in base (whose name, args and mounts it replaces).
func Container(name, restoreUID string, volumes []string, deadline time.Duration, base corev1.Container) corev1.Container {
	c := base
	c.Name = name
	c.Args = Args(restoreUID, volumes, deadline)
	c.Env = nil
	for _, e := range base.Env {
		if e.Name != EnvPodUID {
			c.Env = append(c.Env, e)
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: EnvPodUID, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.uid"}}})
	c.VolumeMounts = nil
	for _, v := range volumes {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v, MountPath: MountPath(v)})
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	// restore-wait's error (the agent's reason) is its last log line.
	c.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	return c
}

// NextContainerName names the next restore-wait container of pod: ContainerName, then
// with -2, -3, ..., skipping a name the pod (or adding) already uses, since a
// duplicate would make the API server refuse the pod.
func NextContainerName(pod *corev1.Pod, adding []corev1.Container) string {
	taken := map[string]bool{}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers, adding} {
		for _, c := range cs {
			taken[c.Name] = true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		taken[c.Name] = true
	}
	name := ContainerName
	for i := 2; taken[name]; i++ {
		name = ContainerName + "-" + strconv.Itoa(i)
	}
	return name
}

// WaitedVolumes reads a pod's Annotation: restore name → the volumes its restore-wait
// waits for. An annotation that does not parse reads as none.
func WaitedVolumes(pod *corev1.Pod) map[string][]string {
	out := map[string][]string{}
	if raw := pod.Annotations[Annotation]; raw != "" {
		_ = json.Unmarshal([]byte(raw), &out)
	}
	return out
}

// UIDOf is the VolumeRestore UID a restore-wait container waits for, "" when c is not
// restore-wait.
func UIDOf(c *corev1.Container) string {
	for i, arg := range c.Args {
		if arg == "--"+FlagRestoreUID && i+1 < len(c.Args) {
			return c.Args[i+1]
		}
	}
	return ""
}

// IsContainer says whether c is a restore-wait init container, of any restore: it
// has the argument --restore-uid, as Args gives it.
func IsContainer(c *corev1.Container) bool {
	return slices.Contains(c.Args, "--"+FlagRestoreUID)
}

// Gated says whether pod carries SchedulingGate.
func Gated(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.SchedulingGates {
		if g.Name == SchedulingGate {
			return true
		}
	}
	return false
}

// RestoreUIDOf is the UID a PodVolumeRestore's markers are named after: that of the
// VolumeRestore that controls it (the restore controller creates every
// PodVolumeRestore with its VolumeRestore as controller owner), "" when it has no such
// owner, and then no marker is written.
func RestoreUIDOf(pvr *v1.PodVolumeRestore) string {
	if ref := metav1.GetControllerOf(pvr); ref != nil && ref.Kind == "VolumeRestore" && ref.Name == pvr.Spec.VolumeRestore {
		return string(ref.UID)
	}
	return ""
}
