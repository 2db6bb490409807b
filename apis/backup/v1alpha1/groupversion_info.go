// Package v1alpha1 holds the backup.holdfast.dev/v1alpha1 API: the objects users commit
// to Git (BackupStorageLocation, VolumeBackupPolicy, VolumeRestore) and the ones the
// controllers write (BackupRepository, PodVolumeBackup, PodVolumeRestore).
//
// +kubebuilder:object:generate=true
// +groupName=backup.holdfast.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every Holdfast kind.
	GroupVersion = schema.GroupVersion{Group: "backup.holdfast.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Holdfast kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the Holdfast kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
