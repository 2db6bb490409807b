// Package policy is the VolumeBackupPolicy controller and its validating webhook: it
// selects pod volumes with the policy's CEL selectors, reports what it selects and
// skips, and on each schedule tick or run-now token creates one PodVolumeBackup per
// selected volume.
package policy
