// Package policy compiles and evaluates the CEL selectors of a VolumeBackupPolicy.
// Variables are typed from the Kubernetes Go types (JSON field names), so a misspelt
// field fails at compile time; it holds no Kubernetes client and does no I/O.
package policy
