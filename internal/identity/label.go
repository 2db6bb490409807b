package identity

import (
	"strings"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// MaxLabelValueLength is the longest label value Kubernetes accepts.
const MaxLabelValueLength = 63

// LabelValue is the label value that names an object whose name may be longer than a
// label value allows (policies, storage locations, repositories and restores have
// names of up to 253 characters): the name itself when it fits, else its first
// characters and a hash of the whole name. Write and select those labels with it,
// never with the raw name, so that both sides agree.
func LabelValue(name string) string {
	if len(name) <= MaxLabelValueLength {
		return name // a DNS name is a valid label value
	}
	sum := hash(name)
	return strings.TrimRight(name[:MaxLabelValueLength-len(sum)-1], "-._") + "-" + sum
}

// PolicyOfBackup is the name of the policy that created a PodVolumeBackup, or "": its
// policy tag holds the whole name, where the policy label may hold only LabelValue.
func PolicyOfBackup(pvb *v1.PodVolumeBackup) string {
	if name := pvb.Spec.Tags[TagPolicy]; name != "" {
		return name
	}
	return pvb.Labels[v1.LabelPolicy]
}
