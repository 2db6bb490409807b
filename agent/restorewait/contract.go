package restorewait

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
	// MountRoot/<volume name>. It never opens them: its markers are in the marker
	// volume. The mounts say which volumes it waits for (the agent reads them).
	MountRoot = "/holdfast-restore"
	// MarkerVolumeName is the pod volume that holds the markers (with -2, -3, ... when
	// the pod already uses the name): a small memory-backed emptyDir that only the
	// restore-wait containers mount, read-only, at MarkerMountPath, and that the agent
	// writes through the node's kubelet directory. The application's volumes get no
	// marker, and restore-wait needs no access to them: a volume root that only its
	// owner may read (a database's data directory) holds no pod back.
	MarkerVolumeName = "holdfast-restore-markers"
	// MarkerMountPath is where restore-wait mounts the marker volume.
	MarkerMountPath = "/holdfast-markers"
	// markerVolumeSize bounds the marker volume: a few files of at most
	// maxFailureReasonSize each.
	markerVolumeSize = "1Mi"
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
	// FlagMarkerDir is the directory restore-wait reads its markers in: the marker
	// volume, at MarkerMountPath. Without it (a pod admitted by a webhook that made no
	// marker volume) restore-wait reads the markers in .holdfast at the root of each
	// volume it waits for, as it used to.
	FlagMarkerDir = "marker-dir"
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

// VolumeMarkerName is the name, in the marker volume, of the done-marker of the
// restore restoreUID of the pod's volume named volume: <restore uid>.<volume>. The
// failure marker adds FailedSuffix. A volume name has no dot (it is a DNS label), so
// no marker name is another's.
func VolumeMarkerName(restoreUID, volume string) string {
	return restoreUID + "." + volume
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

// Args are the init container's arguments: wait for restoreUID's markers of volumes
// (mounted at MountPath), in markerDir (in the volumes themselves when it is ""), for
// at most deadline (0: no limit).
func Args(restoreUID string, volumes []string, markerDir string, deadline time.Duration) []string {
	args := []string{Subcommand, "--" + FlagRestoreUID, restoreUID}
	for _, v := range volumes {
		args = append(args, "--"+FlagVolume, MountPath(v))
	}
	if markerDir != "" {
		args = append(args, "--"+FlagMarkerDir, markerDir)
	}
	if deadline > 0 {
		args = append(args, "--"+FlagDeadline, deadline.String())
	}
	return args
}

// Container is the restore-wait init container named name that waits for restoreUID's
// markers of volumes of the pod in the pod's marker volume named markerVolume (see
// MarkerVolume), with the image, resources and securityContext given in base (whose
// name, args and mounts it replaces). It mounts the volumes it waits for read-only,
// and never opens them. markerVolume "" makes the container a webhook made before the
// marker volume, which reads its markers in .holdfast in each volume (of its own pod:
// it reads its pod's UID from EnvPodUID); only tests of that path make it now.
func Container(name, restoreUID string, volumes []string, markerVolume string, deadline time.Duration, base corev1.Container) corev1.Container {
	c := base
	c.Name = name
	markerDir := ""
	if markerVolume != "" {
		markerDir = MarkerMountPath
	}
	c.Args = Args(restoreUID, volumes, markerDir, deadline)
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
		// Read-write for the old protocol only: restore-wait removed its markers there.
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v, MountPath: MountPath(v), ReadOnly: markerVolume != ""})
	}
	if markerVolume != "" {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: markerVolume, MountPath: MarkerMountPath, ReadOnly: true})
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

// MarkerVolume is the pod's marker volume named name: memory-backed, so that the
// markers never touch the node's disk, and small.
func MarkerVolume(name string) corev1.Volume {
	size := resource.MustParse(markerVolumeSize)
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		Medium: corev1.StorageMediumMemory, SizeLimit: &size}}}
}

// NextMarkerVolumeName names the pod's marker volume: MarkerVolumeName, then with -2,
// -3, ..., skipping a name the pod already uses for a volume or that one of its
// containers mounts: a container that mounts a volume the pod does not declare yet
// would otherwise mount the marker volume and could write markers.
func NextMarkerVolumeName(pod *corev1.Pod) string {
	taken := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		taken[v.Name] = true
	}
	mounts := func(mounts []corev1.VolumeMount, devices []corev1.VolumeDevice) {
		for _, m := range mounts {
			taken[m.Name] = true
		}
		for _, d := range devices {
			taken[d.Name] = true
		}
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			mounts(c.VolumeMounts, c.VolumeDevices)
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		mounts(c.VolumeMounts, c.VolumeDevices)
	}
	name := MarkerVolumeName
	for i := 2; taken[name]; i++ {
		name = MarkerVolumeName + "-" + strconv.Itoa(i)
	}
	return name
}

// MarkerVolumeOf is the name of the marker volume in which pod's restore-wait for
// restoreUID reads its markers: the volume it mounts at its --marker-dir. It is ""
// when that restore-wait has no --marker-dir (a pod admitted before the marker volume:
// its markers go into .holdfast in its volumes) or the pod has no such restore-wait.
// It fails when the directory is not a memory emptyDir that only restore-wait
// containers mount: the pod was not made by the webhook, and a marker there could be
// forged by its application.
func MarkerVolumeOf(pod *corev1.Pod, restoreUID string) (string, error) {
	var c *corev1.Container
	for i := range pod.Spec.InitContainers {
		if waitsFor(&pod.Spec.InitContainers[i], restoreUID) {
			c = &pod.Spec.InitContainers[i]
			break
		}
	}
	if c == nil {
		return "", nil
	}
	dir := flagValue(c.Args, FlagMarkerDir)
	if dir == "" {
		return "", nil
	}
	name := ""
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir && m.SubPath == "" && m.SubPathExpr == "" {
			name = m.Name
		}
	}
	if name == "" {
		return "", fmt.Errorf("restore-wait reads its markers in %s, where it mounts no volume", dir)
	}
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.EmptyDir == nil || vol.EmptyDir.Medium != corev1.StorageMediumMemory {
		return "", fmt.Errorf("restore-wait's marker volume %s is not a memory-backed emptyDir", name)
	}
	other := func(c *corev1.Container) error {
		for _, m := range c.VolumeMounts {
			if m.Name == name {
				return fmt.Errorf("container %s mounts restore-wait's marker volume %s: it could forge a marker", c.Name, name)
			}
		}
		return nil
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; !IsContainer(c) {
			if err := other(c); err != nil {
				return "", err
			}
		}
	}
	for i := range pod.Spec.Containers {
		if err := other(&pod.Spec.Containers[i]); err != nil {
			return "", err
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if err := other((*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)); err != nil {
			return "", err
		}
	}
	return name, nil
}

// IsMarkerVolume says whether the pod's volume named volume is a marker volume: one
// that a restore-wait container mounts at its --marker-dir. It holds no data of the
// application: policies do not back it up, coverage does not count it, and restores do
// not restore into it.
func IsMarkerVolume(pod *corev1.Pod, volume string) bool {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !IsContainer(c) {
			continue
		}
		dir := flagValue(c.Args, FlagMarkerDir)
		for _, m := range c.VolumeMounts {
			if dir != "" && m.Name == volume && m.MountPath == dir {
				return true
			}
		}
	}
	return false
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
	return flagValue(c.Args, FlagRestoreUID)
}

// flagValue is the value of the flag --name in args as Args makes them, "" without it.
func flagValue(args []string, name string) string {
	for i, arg := range args {
		if arg == "--"+name && i+1 < len(args) {
			return args[i+1]
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
