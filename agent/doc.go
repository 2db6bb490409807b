// Package agent is the node agent: it reconciles the PodVolumeBackups and
// PodVolumeRestores of its own node, finds each volume under the kubelet root and moves
// the data with kopia or restic.
//
// # The job lifecycle and who owns it
//
// A PodVolumeBackup or PodVolumeRestore is one job. Its status in the API server is
// the job's state for everyone else; in this process, the jobs registry (jobs.go) is
// the only record of "this agent moves that volume now". Nothing else keeps job state:
//
//	Pending ──claim──▶ InProgress ──end──▶ Completed | Failed | Canceled
//	   │                                      ▲
//	   └──────────────end─────────────────────┘  (canceled, Stalled repository,
//	                                              refused key, read-only volume, ...)
//
// Who does what:
//
//   - triage (triage.go) decides what a reconcile does. A job running here is looked
//     after from the cached object (stopped on cancel, deletion or when its pod goes);
//     otherwise the decision is taken on a fresh read, because the cache may lag behind
//     a job of this process that just ended: InProgress without a job here means an
//     agent restarted (fail it), Pending means start it.
//   - jobs.start runs the job in a goroutine once one of the node's slots is free
//     (restores before backups). The goroutine owns the object from then on.
//   - The status is written in three ways only (status.go): waiting (Pending with the
//     reason), claimWork (Pending→InProgress, with the resourceVersion read, so two
//     agents for one node cannot both run it) and end (the final phase, retried until
//     it lands). patchStatus changes the in-memory object only when a patch landed.
//   - The data mover's report (an agent error, a stop the agent asked for, a cancel,
//     a job error or success) becomes an outcome in one pure function, moverOutcome.
//   - A restore's end also tells restore-wait, whenever the pod is held for the
//     restore, how it ended (restore_marker.go), in the pod's marker volume (in the
//     volume, for a pod admitted before the marker volume) and, for a claim that
//     other held pods mount, for each of them on this node.
//   - A pod of this node held on a claim that another pod's restore restores, and
//     that this restore's end did not release (it came later, or the manager ended
//     that restore), is released by ServedPodReconciler (served_pod_controller.go)
//     with how that restore ended.
//
// Work no agent will do (its node is gone, not Linux, or runs no agent) is failed by
// the manager (controllers/stranded), which loses to an agent's claim.
package agent

// Events, which every agent writes on the objects it works on.
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch
