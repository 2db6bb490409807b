// Package agent is the node agent: it reconciles the PodVolumeBackups and
// PodVolumeRestores of its own node, finds each volume under the kubelet root and moves
// the data with kopia or restic.
package agent

// Events, which every agent writes on the objects it works on.
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch
