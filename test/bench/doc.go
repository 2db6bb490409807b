// Package bench measures Holdfast's data path side by side with the kopia and restic
// CLIs on generated data sets, and the raw limits of the machine (page-cache reads,
// kopia hashing and encryption). `make bench` runs it through cmd/holdfast-bench; the
// results feed docs/performance.md and the charts next to it.
package bench
