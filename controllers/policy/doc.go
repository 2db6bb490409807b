// Package policy is the VolumeBackupPolicy controller and its validating webhook: it
// selects pod volumes with the policy's CEL selectors, reports what it selects and
// skips, and on each schedule tick or run-now token creates one PodVolumeBackup per
// selected volume.
//
// # Files
//
//   - volumebackuppolicy_controller.go: Reconcile, the scope of one pass, the steps
//     that read the spec and the storage location, Ready, and the watches that map
//     changes to policies.
//   - selection.go: the selection step (reconcileSelection over a snapshot of the
//     informer caches), skip reasons and InFlight.
//   - volumebackuppolicy_run.go: the run steps (start, create, count).
//   - volumebackuppolicy_status.go: pure functions of status (runOutcome, summarize,
//     the failure lists), table-tested beside it.
//
// # A pass
//
// Reconcile runs the steps in order, each on the scope: reconcileSpec (selector and
// schedule; a policy that does not compile stops the pass with conditions.Stall),
// reconcileSelection (targets and skip reasons, InFlight applied), reconcileStorageLocation,
// reconcileRun (start a run; create its due backups), reconcileLastRun (count the run)
// and reconcileReady. A step stops the pass in one of the three typed ways of
// internal/conditions (Stall, Wait, a transient error), mapped to conditions and a
// requeue by conditions.Result; the status is patched once, unless the pass saw a
// stale policy (staleView), when nothing is written.
//
// # The run state machine
//
// status.lastRun is the only record of a run. Its states, and what moves it on:
//
//	(none) --token or due tick--> Creating
//	Creating:  outcome InProgress, creationEndTime absent
//	   createDueBackups, every pass: create the backups whose jitter offset has passed;
//	   a failed create is recorded (failures: CreateFailed, with the API's message)
//	   and retried every createRetry; volumesSelected counts created + failed + not
//	   yet due. Reconciling=True (RunInProgress) while volumes wait or creates fail.
//	   --every volume has its backup and the jitter window has passed,
//	     or the window (jitter + createGrace) closed--> Running
//	   --a new token or tick--> superseded: the new run takes the volumes not started
//	     (RunSuperseded event); those started finish and are InFlight in the new run.
//	Running:   outcome InProgress, creationEndTime set; volumesSelected, volumesSkipped
//	   and CreateFailed are fixed. reconcileLastRun counts the run's backups.
//	   --no backup unfinished--> Ended, outcome = runOutcome(selected, backedUp,
//	     failed, skipped, pending): Succeeded only when every selected volume was
//	     backed up; Failed when none was (or all were skipped); else PartiallyFailed.
//	Ended:     completionTime and message set, a Run<Outcome> event emitted. History:
//	   never counted again, even when its backups go with their namespace.
//
// A run that starts while the storage location is missing or not Ready goes straight
// to Ended, Failed, with the location's sentence in message. A run-now token is
// consumed only when the location has been probed, so a run never waits on a probe.
//
// Fields of lastRun and who sets them: name, trigger, startTime (startRun);
// creationEndTime, volumesSelected, volumesSkipped, failures[CreateFailed]
// (createDueBackups); volumesTotal, volumesCompleted, volumesFailed, bytesUploaded,
// failures[BackupFailed, Canceled] (reconcileLastRun, from the run's backups);
// outcome, message, completionTime (reconcileLastRun with runOutcome and runMessage,
// or startRun for a run that cannot start).
package policy
