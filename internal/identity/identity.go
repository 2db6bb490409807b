// Package identity names what Holdfast stores and creates: the source path of a pod
// volume (what keeps a volume's backups one incremental chain across pod recreation;
// one per copy of the data, so the replicas of a Deployment back up their emptyDirs
// into slots of their own, see replica.go), the per-namespace BackupRepository name
// and the PodVolumeBackup name of a run.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// MaxNameLength is the longest object name Kubernetes accepts (a DNS subdomain).
const MaxNameLength = 253

// OwnerOfReplicaSet returns the controller owner of the named ReplicaSet in the
// namespace, or nil when it has none or is unknown. The policy controller answers it
// from its informer cache, so resolving a Deployment costs no API call.
type OwnerOfReplicaSet func(namespace, name string) *metav1.OwnerReference

// ClaimSourcePath is the source identity of claim: /pvc/<claim>, whichever pod mounts it.
func ClaimSourcePath(claim string) string { return "/pvc/" + claim }

// SourcePath is the source identity of a pod volume inside its namespace's repository:
//
//	/pvc/<claim>                              a PersistentVolumeClaim (also an ephemeral one: <pod>-<volume>)
//	/deployment/<deployment>/<volume>         a pod of a ReplicaSet owned by a Deployment
//	/statefulset/<statefulset>/<ordinal>/<volume>
//	/daemonset/<daemonset>/<node>/<volume>
//	/<owner-kind>/<owner-name>/<volume>       any other controller owner (ReplicaSet, Job, a custom kind)
//	/pod/<pod>/<volume>                       a pod without a controller owner
//
// Backups with the same source path form one incremental chain, so a recreated
// Deployment or StatefulSet pod continues its volume's chain, emptyDir included. The
// owner path is slot 0 of a replicated volume; the pods of an owner that runs several
// take further slots (ReplicaSourcePath, AssignSlots), so that each copy of the data
// keeps its own chain.
// rsOwner may be nil; a ReplicaSet's owner is then unknown and the ReplicaSet is used.
func SourcePath(pod *corev1.Pod, volume *corev1.Volume, rsOwner OwnerOfReplicaSet) string {
	if claim := ClaimName(pod, volume); claim != "" {
		return ClaimSourcePath(claim)
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "/pod/" + pod.Name + "/" + volume.Name
	}
	kind, name := owner.Kind, owner.Name
	if kind == "ReplicaSet" && rsOwner != nil {
		if o := rsOwner(pod.Namespace, name); o != nil {
			kind, name = o.Kind, o.Name
		}
	}
	switch kind {
	case "StatefulSet":
		if ordinal, ok := statefulSetOrdinal(pod.Name, name); ok {
			return "/statefulset/" + name + "/" + ordinal + "/" + volume.Name
		}
	case "DaemonSet":
		if pod.Spec.NodeName != "" {
			return "/daemonset/" + name + "/" + pod.Spec.NodeName + "/" + volume.Name
		}
	}
	return "/" + strings.ToLower(kind) + "/" + name + "/" + volume.Name
}

// ClaimName is the PersistentVolumeClaim behind a pod volume, or "" when the volume is
// not a claim. A generic ephemeral volume's claim is named <pod>-<volume>.
func ClaimName(pod *corev1.Pod, volume *corev1.Volume) string {
	switch {
	case volume.PersistentVolumeClaim != nil:
		return volume.PersistentVolumeClaim.ClaimName
	case volume.Ephemeral != nil:
		return pod.Name + "-" + volume.Name
	}
	return ""
}

// statefulSetOrdinal returns the ordinal of a StatefulSet pod, named <set>-<ordinal>.
func statefulSetOrdinal(pod, set string) (string, bool) {
	ordinal, ok := strings.CutPrefix(pod, set+"-")
	if !ok || ordinal == "" {
		return "", false
	}
	for _, r := range ordinal {
		if r < '0' || r > '9' {
			return "", false
		}
	}
	return ordinal, true
}

// RepositoryName is the name of the BackupRepository, in each workload namespace, that
// holds the backups of one storage location made with one uploader: <location>-<uploader>,
// shortened with a hash when that would be longer than a Kubernetes name allows.
func RepositoryName(storageLocation string, uploader v1.Uploader) string {
	return fitName(storageLocation+"-"+string(uploader), storageLocation, string(uploader))
}

// PodVolumeBackupName is the name of the PodVolumeBackup of one volume of one pod in
// one run. It is the same every time it is computed, so a retried run finds the backups
// it already created instead of making duplicates: <run>-<pod>-<volume>-<hash>, where
// the hash keeps names apart that the dashes would confuse (pod a-b, volume c versus pod
// a, volume b-c), and the readable part is cut to fit 253 characters.
func PodVolumeBackupName(run, pod, volume string) string {
	sum := hash(run, pod, volume)
	prefix := strings.Join([]string{run, pod, volume}, "-")
	if max := MaxNameLength - len(sum) - 1; len(prefix) > max {
		prefix = strings.TrimRight(prefix[:max], "-.")
	}
	return prefix + "-" + sum
}

// fitName returns name when it is short enough, else a prefix of it with a hash of
// the parts that made it.
func fitName(name string, parts ...string) string {
	if len(name) <= MaxNameLength {
		return name
	}
	sum := hash(parts...)
	return strings.TrimRight(name[:MaxNameLength-len(sum)-1], "-.") + "-" + sum
}

// hash is 10 hex digits of the SHA-256 of the parts, separated so that ("ab","c") and
// ("a","bc") differ.
func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:10]
}

// PodVolumeRestoreName is the name of the PodVolumeRestore of one volume of one pod in
// one VolumeRestore, built like PodVolumeBackupName: stable, so the restore controller
// never creates a second one for the same volume.
func PodVolumeRestoreName(restore, pod, volume string) string {
	return PodVolumeBackupName(restore, pod, volume)
}
