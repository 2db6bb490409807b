package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VolumeCoverageName is the name of the one VolumeCoverage, which the manager creates.
const VolumeCoverageName = "cluster"

// Coverage limits: what the status lists is bounded so that the object stays small (a
// few tens of kilobytes) whatever the size of the cluster; the counts are always whole
// and the metrics carry every volume.
const (
	MaxCoverageNamespaces = 256
	MaxCoverageEntries    = 100
	MaxCoverageReasons    = 32
)

// Coverage states of a volume.
const (
	// CoverageProtected: a policy selects the volume and a run would back it up.
	CoverageProtected = "Protected"
	// CoverageSkipped: a policy selects the volume but a run would skip it (reason).
	CoverageSkipped = "Skipped"
	// CoverageExcluded: no policy protects the volume and a policy's
	// spec.coverage.exclude matches it.
	CoverageExcluded = "Excluded"
	// CoverageUnprotected: no policy protects the volume and none excludes it.
	CoverageUnprotected = "Unprotected"
)

// ConditionCovered is the VolumeCoverage condition that is True when no volume is
// unprotected.
const ConditionCovered = "Covered"

// VolumeCoverageStatus is the coverage of every pod volume that holds data and of every
// bound claim, computed by the manager from the policies' selectors.
type VolumeCoverageStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (the coverage was computed), Covered (no volume is
	// unprotected), Stalled (a policy's selector or exclusion does not compile).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastComputedTime is when the coverage was last computed. It is computed again
	// when pods, claims, namespaces or policies change, at most every 30 seconds.
	// +optional
	LastComputedTime *metav1.Time `json:"lastComputedTime,omitempty"`

	// protected, skipped, excluded and unprotected count the volumes in each state.
	// A volume is counted once per source identity (a claim however many pods mount
	// it, a Deployment's emptyDir once for all its replicas).
	// +optional
	Protected int32 `json:"protected"`
	// +optional
	Skipped int32 `json:"skipped"`
	// +optional
	Excluded int32 `json:"excluded"`
	// +optional
	Unprotected int32 `json:"unprotected"`

	// namespaces counts the volumes of each namespace by state: namespaces with
	// unprotected volumes first, then by name, at most 256.
	// +optional
	// +listType=map
	// +listMapKey=namespace
	// +kubebuilder:validation:MaxItems=256
	Namespaces []NamespaceCoverage `json:"namespaces,omitempty"`
	// namespacesOmitted is the number of namespaces left out of namespaces.
	// +optional
	NamespacesOmitted int32 `json:"namespacesOmitted,omitempty"`

	// skippedReasons counts the skipped volumes by the reason a run would skip them
	// (HostPath, PodNotRunning, NotMounted, Suspended, ...), with a few examples each.
	// +optional
	// +listType=map
	// +listMapKey=reason
	// +kubebuilder:validation:MaxItems=32
	SkippedReasons []CoverageReason `json:"skippedReasons,omitempty"`

	// exclusions counts the excluded volumes by the policy whose spec.coverage.exclude
	// matched them first (policies in name order).
	// +optional
	// +listType=map
	// +listMapKey=reason
	// +kubebuilder:validation:MaxItems=32
	Exclusions []CoverageReason `json:"exclusions,omitempty"`

	// unprotectedClaims are the first 100 unprotected claims by namespace and name.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	UnprotectedClaims []UnprotectedClaim `json:"unprotectedClaims,omitempty"`
	// unprotectedClaimsOmitted is the number of unprotected claims left out of
	// unprotectedClaims.
	// +optional
	UnprotectedClaimsOmitted int32 `json:"unprotectedClaimsOmitted,omitempty"`

	// unprotectedVolumes are the first 100 unprotected pod volumes that are not
	// claims (emptyDir, hostPath, inline volumes), by namespace and source.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	UnprotectedVolumes []UnprotectedVolume `json:"unprotectedVolumes,omitempty"`
	// unprotectedVolumesOmitted is the number of unprotected pod volumes left out of
	// unprotectedVolumes.
	// +optional
	UnprotectedVolumesOmitted int32 `json:"unprotectedVolumesOmitted,omitempty"`
}

// NamespaceCoverage counts the volumes of one namespace by state.
type NamespaceCoverage struct {
	// namespace name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +optional
	Protected int32 `json:"protected"`
	// +optional
	Skipped int32 `json:"skipped"`
	// +optional
	Excluded int32 `json:"excluded"`
	// +optional
	Unprotected int32 `json:"unprotected"`
}

// CoverageReason counts volumes for one reason (or policy), with a few examples.
type CoverageReason struct {
	// reason is the skip reason, or the name of the excluding policy.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Reason string `json:"reason"`
	// count of volumes.
	// +required
	Count int32 `json:"count"`
	// examples are a few of them, as <namespace><source> (shop/pvc/data,
	// shop/deployment/web/cache).
	// +optional
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:items:MaxLength=1024
	Examples []string `json:"examples,omitempty"`
}

// UnprotectedClaim is a claim that no policy protects or excludes.
type UnprotectedClaim struct {
	// namespace of the claim.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// name of the claim.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// pod is a running pod that mounts the claim (the oldest), empty when none does.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod,omitempty"`
}

// UnprotectedVolume is a pod volume, not a claim, that no policy protects or excludes.
type UnprotectedVolume struct {
	// namespace of the pod.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// source is the volume's source identity, as a backup's source path would be
	// (/deployment/web/cache, /pod/tool/scratch).
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Source string `json:"source"`
	// volume is the name of the pod volume.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Volume string `json:"volume"`
	// pod is one pod that has the volume (the oldest).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod,omitempty"`
	// type is the kind of volume: emptyDir, hostPath, nfs, csi, ...
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Type string `json:"type,omitempty"`
}

// VolumeCoverage is the cluster's backup coverage: which pod volumes and claims a
// policy protects, skips (with the reason), excludes on purpose, or leaves
// unprotected. There is one, named cluster; the manager creates it and keeps its
// status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vcov,categories=holdfast
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'cluster'",message="there is one VolumeCoverage and it is named cluster"
// +kubebuilder:printcolumn:name="Protected",type=integer,JSONPath=`.status.protected`
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.skipped`
// +kubebuilder:printcolumn:name="Excluded",type=integer,JSONPath=`.status.excluded`
// +kubebuilder:printcolumn:name="Unprotected",type=integer,JSONPath=`.status.unprotected`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Computed",type=date,JSONPath=`.status.lastComputedTime`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Covered")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VolumeCoverage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// status is the computed coverage.
	// +optional
	Status VolumeCoverageStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// VolumeCoverageList is a list of VolumeCoverages.
type VolumeCoverageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VolumeCoverage `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VolumeCoverage{}, &VolumeCoverageList{})
}
