// Package hooks runs the pre and post hooks of a pod's volume backups: commands in the
// pod's containers, from the policy's spec.hooks or the pod's Velero hook annotations,
// executed by the manager through the API server. Resolve freezes a pod's hooks into
// its PodVolumeBackups; the HookReconciler runs them around the agent's uploads.
package hooks
