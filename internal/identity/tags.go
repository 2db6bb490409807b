package identity

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The tags every snapshot carries (kopia manifest tags, restic tags; restic also
// records SnapshotHost as its host). They are what finds a snapshot again without the
// cluster that wrote it: its namespace (and which incarnation of it), source
// identity, pod, volume, claim, policy, run, uploader, node and Holdfast version.
const (
	TagNamespace       = "namespace"
	TagNamespaceUID    = "namespace-uid"
	TagSource          = "source"
	TagPod             = "pod"
	TagVolume          = "volume"
	TagClaim           = "claim"
	TagBackup          = "backup"
	TagPolicy          = "policy"
	TagRun             = "run"
	TagUploader        = "uploader"
	TagNode            = "node"
	TagStorageLocation = "storage-location"
	TagVersion         = "holdfast-version"
)

// Adopts says whether namespace ns may restore, and continue, snapshots taken in the
// namespace incarnation uid: its own, or one that its AnnotationAdoptBackups lists
// ("*" adopts every earlier one, and the snapshots that predate namespace UIDs).
func Adopts(ns *corev1.Namespace, uid string) bool {
	if uid != "" && uid == string(ns.UID) {
		return true
	}
	for _, a := range strings.Split(ns.Annotations[v1.AnnotationAdoptBackups], ",") {
		a = strings.TrimSpace(a)
		if a == "*" || (uid != "" && a == uid) {
			return true
		}
	}
	return false
}
