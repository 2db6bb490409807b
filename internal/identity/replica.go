package identity

import (
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Replica slots: one identity per copy of the data.
//
// The pods of a Deployment (or a ReplicaSet, a Job, a custom controller) have no name
// or ordinal that survives their replacement, yet each of them holds its own copy of a
// pod-local volume (an emptyDir). SourcePath names that volume by its owner alone
// (/deployment/web/cache), which would make every replica's backups one chain, one
// retention group and one "latest". Each replica therefore backs up into a slot of its
// own:
//
//	/deployment/web/cache              slot 0: the path every backup had before slots,
//	                                   so existing chains continue and are restored
//	/deployment/web/replica-1/cache    slot 1
//	/deployment/web/replica-<k>/cache  slot k
//
// A slot path has one component more than an owner path, so no volume name can make
// the two collide. Slots are assigned per owner, not per volume: all pod-local volumes
// of one pod use the same slot. AssignSlots gives a pod the slot its backups already
// use when it is still free, and each other pod the lowest free slot, oldest pod
// first: N replicas use slots 0..N-1, and a replaced replica takes the slot its
// predecessor left. At restore the planner gives the pods of one owner distinct slots
// that have backups, the same way, and records the slot in the PodVolumeRestore's
// source path.
//
// Claims are not slotted: a claim is one copy of the data however many pods mount it
// (/pvc/<claim>), and StatefulSet (ordinal) and DaemonSet (node) pods, and pods
// without an owner, already have a path of their own.

// replicaPrefix starts the slot component of a slot path.
const replicaPrefix = "replica-"

// ReplicaOwner returns the path of the controller owner whose pods share the source
// path of their pod-local volumes (/<kind>/<name>), and true, when pod is such a
// replica: it has an owner, and that is neither a StatefulSet (whose pods have
// ordinals) nor a DaemonSet (whose pods have nodes).
func ReplicaOwner(pod *corev1.Pod, rsOwner OwnerOfReplicaSet) (string, bool) {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "", false
	}
	kind, name := owner.Kind, owner.Name
	if kind == "ReplicaSet" && rsOwner != nil {
		if o := rsOwner(pod.Namespace, name); o != nil {
			kind, name = o.Kind, o.Name
		}
	}
	switch kind {
	case "StatefulSet":
		if _, ok := statefulSetOrdinal(pod.Name, name); ok {
			return "", false
		}
	case "DaemonSet":
		// Its pods are named by node (once scheduled; before, they are not backed up).
		return "", false
	}
	return "/" + strings.ToLower(kind) + "/" + name, true
}

// Replicated says whether volume of pod is a pod-local volume that the pods of its
// owner each hold a copy of, so that it is backed up and restored by slot.
func Replicated(pod *corev1.Pod, volume *corev1.Volume, rsOwner OwnerOfReplicaSet) bool {
	if ClaimName(pod, volume) != "" {
		return false
	}
	_, ok := ReplicaOwner(pod, rsOwner)
	return ok
}

// SlotPath is the source path of the pod-local volume named volume in slot slot of
// the owner at ownerPath (from ReplicaOwner): slot 0 is the owner path
// <ownerPath>/<volume>, slot k is <ownerPath>/replica-<k>/<volume>.
func SlotPath(ownerPath, volume string, slot int) string {
	if slot == 0 {
		return ownerPath + "/" + volume
	}
	return ownerPath + "/" + replicaPrefix + strconv.Itoa(slot) + "/" + volume
}

// ReplicaSourcePath is the source path of volume of pod when pod is in slot slot:
// SlotPath for a replicated volume, SourcePath for any other.
func ReplicaSourcePath(pod *corev1.Pod, volume *corev1.Volume, rsOwner OwnerOfReplicaSet, slot int) string {
	if !Replicated(pod, volume, rsOwner) {
		return SourcePath(pod, volume, rsOwner)
	}
	owner, _ := ReplicaOwner(pod, rsOwner)
	return SlotPath(owner, volume.Name, slot)
}

// SlotOf parses a source path of a replicated volume of the owner at ownerPath: its
// slot and true when path is SlotPath(ownerPath, <volume>, slot) for some volume and
// slot.
func SlotOf(ownerPath, path string) (int, bool) {
	rest, ok := strings.CutPrefix(path, ownerPath+"/")
	if !ok || rest == "" {
		return 0, false
	}
	if !strings.Contains(rest, "/") {
		return 0, true
	}
	digits, volume, _ := strings.Cut(rest, "/")
	digits, ok = strings.CutPrefix(digits, replicaPrefix)
	if !ok || volume == "" || strings.Contains(volume, "/") || digits == "" || digits[0] == '0' {
		return 0, false
	}
	k, err := strconv.Atoi(digits)
	if err != nil || k <= 0 {
		return 0, false
	}
	return k, true
}

// AssignSlots gives each pod (the pods of one owner) a distinct slot: a pod keeps
// its previous slot (by UID) while no older pod keeps the same one, and the others
// take the lowest free slots, oldest pod first (creation time, then name). allowed,
// when not nil, says which slots may be given to a pod without a previous slot; a pod
// left without one is absent from the result.
func AssignSlots(pods []*corev1.Pod, previous map[types.UID]int, allowed func(slot int) bool) map[types.UID]int {
	ordered := slices.Clone(pods)
	slices.SortStableFunc(ordered, func(a, b *corev1.Pod) int {
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			if a.CreationTimestamp.Before(&b.CreationTimestamp) {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	out := make(map[types.UID]int, len(pods))
	taken := map[int]bool{}
	for _, pod := range ordered {
		if slot, ok := previous[pod.UID]; ok && slot >= 0 && !taken[slot] {
			out[pod.UID] = slot
			taken[slot] = true
		}
	}
	next := 0
	for _, pod := range ordered {
		if _, ok := out[pod.UID]; ok {
			continue
		}
		for taken[next] || (allowed != nil && next < maxAllowedProbe && !allowed(next)) {
			next++
		}
		if next >= maxAllowedProbe {
			continue
		}
		out[pod.UID] = next
		taken[next] = true
		next++
	}
	return out
}

// maxAllowedProbe bounds the slots AssignSlots tries: more replicas than this per
// owner are not expected.
const maxAllowedProbe = 10000
