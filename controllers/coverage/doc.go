// Package coverage computes which pod volumes and claims of the cluster a
// VolumeBackupPolicy protects, skips (with the reason a run would give), excludes on
// purpose (spec.coverage.exclude) or leaves unprotected, and publishes the result in
// the VolumeCoverage named cluster, as metrics and as events on claims.
//
// It selects with the policy controller's own code (policy.SelectVolumes) and CEL
// engine, so that coverage and runs never disagree. One computation covers the whole
// cluster and runs at most every Options.Interval (30 s by default), whatever the
// rate of changes.
package coverage
