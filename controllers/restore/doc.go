// Package restore holds the manager's restore side: the VolumeRestore reconciler, which
// turns a restore into one PodVolumeRestore per (pod, volume) once the pod is scheduled,
// the pod webhook that holds new pods in a restore-wait init container until their
// data is back, and the held-pod reconciler that releases the pods the webhook kept
// unscheduled while their restore could not yet say what they wait for.
package restore
