// Package volumepath finds the directory of a pod volume on its node, under the
// kubelet's root: <root>/pods/<pod uid>/volumes/<plugin>/<dir>, as the kubelet lays it out.
package volumepath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ErrUnsupported marks a volume that Holdfast cannot back up or restore by design; the
// message says why, in a sentence a user can act on.
var ErrUnsupported = errors.New("unsupported volume")

// ErrNotMounted marks a volume whose directory is not on the node, or, for a volume
// the kubelet mounts (CSI, local, NFS), a directory that is not a mount point: the pod
// does not run here, the kubelet has not set up its volumes yet (a moment after
// scheduling) or is tearing them down, or the agent does not see the node's mounts.
// Reading such a directory would store an empty backup as a good one.
var ErrNotMounted = errors.New("volume not mounted")

// notMounted is an ErrNotMounted with its own sentence.
type notMounted struct{ msg string }

func (e notMounted) Error() string        { return e.msg }
func (e notMounted) Is(target error) bool { return target == ErrNotMounted }

// Plugin directory names under <root>/pods/<uid>/volumes.
const (
	pluginEmptyDir = "kubernetes.io~empty-dir"
	pluginLocal    = "kubernetes.io~local-volume"
	pluginCSI      = "kubernetes.io~csi"
	pluginNFS      = "kubernetes.io~nfs"
)

// Resolve returns the directory holding the files of pod volume volumeName. pv is the
// PersistentVolume bound to the volume's claim (for persistentVolumeClaim and ephemeral
// volumes) and nil otherwise. The directory must exist, and exactly one must match.
func Resolve(kubeletRoot string, pod *corev1.Pod, volumeName string, pv *corev1.PersistentVolume) (string, error) {
	dir, err := find(kubeletRoot, pod, volumeName, pv)
	if err != nil {
		return "", err
	}
	return dir, checkMounted(filepath.Join(kubeletRoot, "pods", string(pod.UID), "volumes"), dir, pod, volumeName, isMountPoint)
}

// checkMounted fails with ErrNotMounted when dir belongs to a plugin whose volumes the
// kubelet mounts and it is not a mount point.
func checkMounted(volumesDir, dir string, pod *corev1.Pod, volumeName string, mounted func(string) (bool, error)) error {
	rel, err := filepath.Rel(volumesDir, dir)
	if err != nil {
		return err
	}
	plugin, _, _ := strings.Cut(rel, string(filepath.Separator))
	switch plugin {
	case pluginCSI, pluginLocal, pluginNFS:
	default:
		return nil
	}
	ok, err := mounted(dir)
	if err != nil {
		return fmt.Errorf("checking that volume %q of pod %s/%s is mounted: %w", volumeName, pod.Namespace, pod.Name, err)
	}
	if !ok {
		return notMounted{fmt.Sprintf("volume %q of pod %s/%s is not mounted: its %s directory is not a mount point (the kubelet is still setting it up or tearing it down, or the agent does not see the node's mounts: its kubelet directory needs mountPropagation: HostToContainer); an empty directory is not backed up or restored into",
			volumeName, pod.Namespace, pod.Name, plugin)}
	}
	return nil
}

// find locates the volume's directory.
func find(kubeletRoot string, pod *corev1.Pod, volumeName string, pv *corev1.PersistentVolume) (string, error) {
	vol := findVolume(pod, volumeName)
	if vol == nil {
		return "", fmt.Errorf("pod %s/%s has no volume named %q", pod.Namespace, pod.Name, volumeName)
	}
	plugin, dir, err := expected(vol, pv)
	if err != nil {
		return "", err
	}
	volumesDir := filepath.Join(kubeletRoot, "pods", string(pod.UID), "volumes")
	want := filepath.Join(volumesDir, plugin, dir)
	if plugin == pluginCSI {
		want = filepath.Join(want, "mount")
	}
	if isDir(want) {
		return want, nil
	}
	// Plugins this package does not know by name: look for the directory under every
	// plugin, and accept exactly one.
	matches, _ := filepath.Glob(filepath.Join(volumesDir, "*", dir))
	var found []string
	for _, m := range matches {
		if isDir(filepath.Join(m, "mount")) && filepath.Base(filepath.Dir(m)) == pluginCSI {
			m = filepath.Join(m, "mount")
		}
		if isDir(m) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if !isDir(volumesDir) {
			// Status messages are read by the pod's tenants: they name the kubelet's
			// layout, never the node's paths.
			return "", notMounted{fmt.Sprintf("pod %s/%s has no volumes directory on this node: the pod is not running here, or --kubelet-root is not the kubelet's root directory",
				pod.Namespace, pod.Name)}
		}
		return "", notMounted{fmt.Sprintf("volume %q of pod %s/%s is not mounted: no %s in the pod's volumes directory",
			volumeName, pod.Namespace, pod.Name, filepath.Join(plugin, dir))}
	default:
		var plugins []string
		for _, f := range found {
			rel, _ := filepath.Rel(volumesDir, f)
			plugins = append(plugins, rel)
		}
		return "", fmt.Errorf("volume %q of pod %s/%s is ambiguous: %d directories match (%v)",
			volumeName, pod.Namespace, pod.Name, len(found), plugins)
	}
}

func findVolume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// expected returns the plugin directory and the volume's directory name in it.
func expected(vol *corev1.Volume, pv *corev1.PersistentVolume) (plugin, dir string, err error) {
	src := vol.VolumeSource
	switch {
	case src.HostPath != nil:
		return "", "", fmt.Errorf("%w: volume %q is a hostPath volume, which the kubelet hands to the container runtime without mounting it under its pod directory; back up the host path with a node-level tool",
			ErrUnsupported, vol.Name)
	case src.Secret != nil, src.ConfigMap != nil, src.Projected != nil, src.DownwardAPI != nil:
		return "", "", fmt.Errorf("%w: volume %q is generated by Kubernetes from API objects (secret, configMap, projected or downwardAPI); back up the objects, not the volume",
			ErrUnsupported, vol.Name)
	case src.PersistentVolumeClaim != nil, src.Ephemeral != nil:
		return fromPV(vol.Name, pv)
	case src.EmptyDir != nil:
		return pluginEmptyDir, vol.Name, nil
	case src.CSI != nil:
		return pluginCSI, vol.Name, nil
	case src.NFS != nil:
		return pluginNFS, vol.Name, nil
	default:
		return "", vol.Name, nil
	}
}

func fromPV(volName string, pv *corev1.PersistentVolume) (plugin, dir string, err error) {
	if pv == nil {
		return "", "", fmt.Errorf("the claim of volume %q is not bound to a PersistentVolume", volName)
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return "", "", fmt.Errorf("%w: volume %q is a raw block device (volumeMode: Block); Holdfast backs up files, so use a CSI snapshot for block volumes",
			ErrUnsupported, volName)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return "", "", fmt.Errorf("%w: volume %q is bound to hostPath PersistentVolume %s, which the kubelet does not mount under its pod directory; let the agent read it with --host-path-roots, or use a local PersistentVolume",
			ErrUnsupported, volName, pv.Name)
	case pv.Spec.CSI != nil:
		return pluginCSI, pv.Name, nil
	case pv.Spec.Local != nil:
		return pluginLocal, pv.Name, nil
	case pv.Spec.NFS != nil:
		return pluginNFS, pv.Name, nil
	default:
		return "", pv.Name, nil
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
