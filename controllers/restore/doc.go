// Package restore holds the manager's restore side: the VolumeRestore reconciler, which
// turns a restore into one PodVolumeRestore per (pod, volume) once the pod is scheduled,
// and the pod webhook that holds new pods in a restore-wait init container until their
// data is back.
package restore
