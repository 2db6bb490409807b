// Package images builds the container images of the local test cluster without a
// registry: single-layer archives made from static binaries (holdfast with restic, a
// busybox workload, the pause sandbox), ready for `ctr images import`.
package images
