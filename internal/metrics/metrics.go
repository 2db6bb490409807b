// Package metrics names Holdfast's own Prometheus metrics (docs/monitoring.md) and
// holds the ones counted where something happens: restores that end and storage
// location probes. The state the API objects hold is exported on each scrape by
// controllers/monitoring; the agent's by package agent.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The names, fixed by the metrics contract of issue #17: what the rules, the dashboard
// and the docs use. Units are in the names; _total only on counters.
const (
	// Per protected volume: labels VolumeLabels.
	VolumeLastSuccessTimestamp    = "holdfast_volume_last_success_timestamp_seconds"
	VolumeLastAttemptTimestamp    = "holdfast_volume_last_attempt_timestamp_seconds"
	VolumeLastAttemptSuccess      = "holdfast_volume_last_attempt_success"
	VolumeConsecutiveFailures     = "holdfast_volume_consecutive_failures"
	VolumeLastBackupDuration      = "holdfast_volume_last_backup_duration_seconds"
	VolumeLastBackupBytes         = "holdfast_volume_last_backup_bytes"
	VolumeLastBackupUploadedBytes = "holdfast_volume_last_backup_uploaded_bytes"
	VolumeLastBackupFiles         = "holdfast_volume_last_backup_files"
	VolumeBackupInterval          = "holdfast_volume_backup_interval_seconds"

	// Per policy: label policy (and state or reason).
	PolicyLastRunTimestamp      = "holdfast_policy_last_run_timestamp_seconds"
	PolicyLastRunSuccess        = "holdfast_policy_last_run_success"
	PolicyLastRunVolumes        = "holdfast_policy_last_run_volumes"
	PolicyLastRunSkippedVolumes = "holdfast_policy_last_run_skipped_volumes"
	PolicyLastRunFailedVolumes  = "holdfast_policy_last_run_failed_volumes"
	PolicyReady                 = "holdfast_policy_ready"
	PolicyStalled               = "holdfast_policy_stalled"

	// Restores.
	RestoresTotal   = "holdfast_restores_total"
	RestoreDuration = "holdfast_restore_duration_seconds"
	RestoreFailed   = "holdfast_restore_failed"

	// Repositories: labels RepositoryLabels.
	RepositoryReady                    = "holdfast_repository_ready"
	RepositoryStalled                  = "holdfast_repository_stalled"
	RepositoryLastMaintenanceTimestamp = "holdfast_repository_last_maintenance_timestamp_seconds"
	RepositoryLastMaintenanceSuccess   = "holdfast_repository_last_maintenance_success"
	RepositorySize                     = "holdfast_repository_size_bytes"

	// Storage locations: label location.
	StorageLocationReady         = "holdfast_storage_location_ready"
	StorageLocationProbeDuration = "holdfast_storage_location_probe_duration_seconds"

	// Nodes, from the manager's view: label node.
	NodeAgentRunning = "holdfast_node_agent_running"

	// Coverage (controllers/coverage): every claim and pod volume, protected or not.
	CoverageVolumes      = "holdfast_coverage_volumes"
	UnprotectedClaim     = "holdfast_unprotected_claim"
	UnprotectedVolume    = "holdfast_unprotected_volume"
	NodeProtectedVolumes = "holdfast_node_protected_volumes"

	// The agent's own; every series carries the constant label node.
	AgentJobs            = "holdfast_agent_jobs"
	AgentJobsTotal       = "holdfast_agent_jobs_total"
	AgentJobDuration     = "holdfast_agent_job_duration_seconds"
	AgentMoverPeakMemory = "holdfast_agent_mover_peak_memory_bytes"
	AgentInfo            = "holdfast_agent_info"
)

// VolumeLabels are the labels of every per-volume series, in this order.
var VolumeLabels = []string{"namespace", "source", "claim", "policy", "location"}

// RepositoryLabels are the labels of every repository series, in this order.
var RepositoryLabels = []string{"namespace", "repository", "location", "uploader"}

// Restores counts the VolumeRestores that reached a final phase, by namespace and
// outcome (the phase); the restore controller counts each once, on the transition it
// wrote.
var Restores = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: RestoresTotal,
	Help: "VolumeRestores that reached a final phase, by namespace and outcome (Completed, PartiallyFailed, Failed, Expired).",
}, []string{"namespace", "outcome"})

// RestoreDurations observes the time from a VolumeRestore's creation to its
// completion, by outcome.
var RestoreDurations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name: RestoreDuration,
	Help: "Time from a VolumeRestore's creation to its completion, by outcome.",
	// A restore waits for pods and moves whole volumes: seconds to a day.
	Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400},
}, []string{"outcome"})

// ProbeDurations observes each probe of a storage location (write, read back and delete
// a small object), whatever its result.
var ProbeDurations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name: StorageLocationProbeDuration,
	Help: "Duration of each probe of a BackupStorageLocation (write, read back and delete a small object), successful or not.",
	// Three requests to a store: milliseconds on a local one, seconds on a slow one,
	// up to the probe timeout.
	Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
}, []string{"location"})

func init() {
	// The vectors show nothing until something is counted, so the agent, which
	// shares the binary, exports none of them.
	ctrlmetrics.Registry.MustRegister(Restores, RestoreDurations, ProbeDurations)
}

// Seconds is t as a Prometheus timestamp value (seconds since the epoch).
func Seconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// Bool is 1 for true, 0 for false.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
