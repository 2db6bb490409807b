// Package repository is the one place Holdfast touches backup repositories: it builds a
// store from a BackupStorageLocation, probes it, and initialises, opens, writes, reads
// and maintains kopia (as a library) and restic (as a binary) repositories. The manager
// and the node agent both use it, so the two never disagree on layout, keys or errors.
package repository
