// Package images builds Holdfast's container images without a registry or a container
// engine: the Holdfast image that `make image` ships (holdfast and restic, CA roots,
// user 65532; see HoldfastImage) as a multi-platform OCI archive, and for the local test
// cluster the same image for this machine with a busybox workload and the pause
// sandbox, ready for `ctr images import`.
package images
