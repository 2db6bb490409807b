package monitoring

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// descs are the descriptors of every metric the collector sends.
type descs struct {
	volumeLastSuccess, volumeLastAttempt, volumeLastAttemptSuccess, volumeConsecutiveFailures,
	volumeDuration, volumeBytes, volumeUploaded, volumeFiles, volumeInterval *prometheus.Desc

	policyLastRun, policyLastRunSuccess, policyVolumes, policySkipped, policyFailed,
	policyReady, policyStalled *prometheus.Desc

	repositoryReady, repositoryStalled, repositoryMaintenance, repositoryMaintenanceSuccess, repositorySize *prometheus.Desc

	locationReady *prometheus.Desc

	restoreFailed *prometheus.Desc

	nodeAgentRunning *prometheus.Desc
}

func newDescs() descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	vol := metrics.VolumeLabels
	repo := metrics.RepositoryLabels
	return descs{
		volumeLastSuccess: d(metrics.VolumeLastSuccessTimestamp,
			"Completion time of the newest Completed PodVolumeBackup of the volume (Unix seconds).", vol...),
		volumeLastAttempt: d(metrics.VolumeLastAttemptTimestamp,
			"Start (or creation) time of the newest PodVolumeBackup of the volume that reached a final phase (Unix seconds).", vol...),
		volumeLastAttemptSuccess: d(metrics.VolumeLastAttemptSuccess,
			"1 when the newest finished PodVolumeBackup of the volume Completed, 0 when it Failed or was Canceled.", vol...),
		volumeConsecutiveFailures: d(metrics.VolumeConsecutiveFailures,
			"Finished PodVolumeBackups of the volume since its newest Completed one that Failed or were Canceled (of those that still exist).", vol...),
		volumeDuration: d(metrics.VolumeLastBackupDuration,
			"Start to completion of the newest Completed PodVolumeBackup of the volume.", vol...),
		volumeBytes: d(metrics.VolumeLastBackupBytes,
			"Bytes the newest Completed PodVolumeBackup of the volume read (the volume's size).", vol...),
		volumeUploaded: d(metrics.VolumeLastBackupUploadedBytes,
			"New bytes the newest Completed PodVolumeBackup of the volume sent to the store.", vol...),
		volumeFiles: d(metrics.VolumeLastBackupFiles,
			"Files the newest Completed PodVolumeBackup of the volume read.", vol...),
		volumeInterval: d(metrics.VolumeBackupInterval,
			"Longest time between two consecutive scheduled runs of the volume's policy, from its cron schedule and time zone.", vol...),

		policyLastRun: d(metrics.PolicyLastRunTimestamp,
			"Start time of the policy's newest run (Unix seconds).", "policy"),
		policyLastRunSuccess: d(metrics.PolicyLastRunSuccess,
			"1 when the policy's newest finished run Succeeded, 0 when it PartiallyFailed or Failed; absent while it runs.", "policy"),
		policyVolumes: d(metrics.PolicyLastRunVolumes,
			"Volumes of the policy's newest run, by state: selected, completed, failed, skipped.", "policy", "state"),
		policySkipped: d(metrics.PolicyLastRunSkippedVolumes,
			"Volumes the policy selected but does not back up, by reason (status.skipped, as its newest run took them).", "policy", "reason"),
		policyFailed: d(metrics.PolicyLastRunFailedVolumes,
			"Volumes of the policy's newest run that were not backed up, by reason (CreateFailed, BackupFailed, Canceled).", "policy", "reason"),
		policyReady: d(metrics.PolicyReady,
			"1 when the policy's Ready condition is True.", "policy"),
		policyStalled: d(metrics.PolicyStalled,
			"1 when the policy's Stalled condition is True: only a change of its spec can help.", "policy"),

		repositoryReady: d(metrics.RepositoryReady,
			"1 when the BackupRepository's Ready condition is True.", repo...),
		repositoryStalled: d(metrics.RepositoryStalled,
			"1 when the BackupRepository's Stalled condition is True: only a person can make it usable.", repo...),
		repositoryMaintenance: d(metrics.RepositoryLastMaintenanceTimestamp,
			"When the repository's last maintenance pass that ran ended (Unix seconds).", repo...),
		repositoryMaintenanceSuccess: d(metrics.RepositoryLastMaintenanceSuccess,
			"1 when the repository's last maintenance pass that ran succeeded, 0 when it failed (deferred passes do not count).", repo...),
		repositorySize: d(metrics.RepositorySize,
			"Total size of the repository's objects in the store, measured after its last maintenance pass that ran.", repo...),

		locationReady: d(metrics.StorageLocationReady,
			"1 when the BackupStorageLocation's last probe wrote, read back and deleted an object.", "location"),

		restoreFailed: d(metrics.RestoreFailed,
			"1 for each VolumeRestore that ended Failed, PartiallyFailed or Expired, while it exists.", "namespace", "restore"),

		nodeAgentRunning: d(metrics.NodeAgentRunning,
			"1 when a Running and Ready pod of the Holdfast agent is on the Linux node, else 0.", "node"),
	}
}

func (d descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.volumeLastSuccess, d.volumeLastAttempt, d.volumeLastAttemptSuccess, d.volumeConsecutiveFailures,
		d.volumeDuration, d.volumeBytes, d.volumeUploaded, d.volumeFiles, d.volumeInterval,
		d.policyLastRun, d.policyLastRunSuccess, d.policyVolumes, d.policySkipped, d.policyFailed,
		d.policyReady, d.policyStalled,
		d.repositoryReady, d.repositoryStalled, d.repositoryMaintenance, d.repositoryMaintenanceSuccess, d.repositorySize,
		d.locationReady, d.restoreFailed, d.nodeAgentRunning,
	}
}
