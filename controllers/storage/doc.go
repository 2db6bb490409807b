// Package storage holds the manager's controllers for where backups live: storage
// locations (probed until Ready), backup repositories (own key, initialise or connect,
// maintenance) and retention (expiring PodVolumeBackups and their snapshots).
package storage
