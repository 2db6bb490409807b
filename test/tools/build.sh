#!/usr/bin/env bash
# Builds the test toolchain from the Go module proxy into a cache outside the repository,
# keyed by tool version and by the hash of the tool's pinning module (go.mod + go.sum),
# then links the binaries into bin/tools of this checkout.
#
# A cache hit costs a stat; a cold build of everything took 10 minutes on 2 cores with
# empty Go caches (2026-11-24; about 20 on a busier day), most of it kube-apiserver,
# whose dependencies the later tools share. Each line says what is built and how long
# it takes at most when built alone, so a first `make tools` does not look hung.
#
# Usage: test/tools/build.sh [tool ...]   (no argument: every tool in the table, and
#                                          restic for each platform of the image)
#        test/tools/build.sh --platform linux/ARCH restic
#                                         (restic cross-built for the image, `make image`:
#                                          cached by platform, linked as bin/tools/linux-ARCH/restic)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${HOLDFAST_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast/tools}
bindir=${HOLDFAST_TOOLS_BIN:-$repo/bin/tools}

k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"

containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=v2.4.2"

prometheus_ldflags="-s -w -X github.com/prometheus/common/version.Version=3.16.0 -X github.com/prometheus/common/version.Branch=v0.316.0"
# promtool tests the alerting rules (test/prometheus); the server is what test/e2e scrapes
# the local cluster with. Neither needs the cloud service discoveries (AWS, Azure, GCE,
# ...) of Prometheus's plugins package: remove_all_sd leaves only file and http SD,
# enable_kubernetes_sd adds back the one the e2e configuration may use (promtool imports
# it anyway). Measured on 2 cores with empty Go caches (2026-12-06, a busy machine):
# promtool 4.6 min, then the server 5.1 min, 169 MB from the module proxy; without the
# tags the server takes 8.5 min longer and 115 MB more (and is 29 MB larger).
prometheus_tags="remove_all_sd,enable_kubernetes_sd"

# name | module dir | package | version | usual cold build on 2 cores | build tags (comma-separated, - for none) | extra go build flags
# Keep one line per binary. The local cluster (test/cluster) needs kubelet,
# controller-manager, scheduler, kube-proxy and containerd; containerd's optional
# btrfs and devmapper snapshotters need C headers, so their build tags leave them out.
tools_table() {
	cat <<EOF
kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|v1.37.2|8 min|-|-ldflags=$k8s_ldflags
kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|v1.37.2|1.5 min|-|-ldflags=$k8s_ldflags
kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|v1.37.2|30 s|-|-ldflags=$k8s_ldflags
kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|v1.37.2|1 min|-|-ldflags=$k8s_ldflags
kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|v1.37.2|3 min|-|-ldflags=$k8s_ldflags
kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|v1.37.2|1 min|-|-ldflags=$k8s_ldflags
containerd|containerd|github.com/containerd/containerd/v2/cmd/containerd|v2.4.2|2 min|no_btrfs,no_devmapper|-ldflags=$containerd_ldflags
containerd-shim-runc-v2|containerd|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|v2.4.2|30 s|no_btrfs,no_devmapper|-ldflags=$containerd_ldflags
ctr|containerd|github.com/containerd/containerd/v2/cmd/ctr|v2.4.2|30 s|no_btrfs,no_devmapper|-ldflags=$containerd_ldflags
etcd|etcd|.|v3.6.6|2 min|-|-ldflags=-s -w
controller-gen|controller-gen|sigs.k8s.io/controller-tools/cmd/controller-gen|v0.23.0|1 min|-|-ldflags=-s -w
restic|restic|github.com/restic/restic/cmd/restic|v0.18.1|2 min|-|-ldflags=-s -w
kopia|kopia|github.com/kopia/kopia|v0.22.3|3 min|-|-ldflags=-s -w
minio|minio|github.com/minio/minio|2026-02-12|5 min|-|-ldflags=-s -w
promtool|prometheus|github.com/prometheus/prometheus/cmd/promtool|v0.316.0|5 min|$prometheus_tags|-ldflags=$prometheus_ldflags
prometheus|prometheus|github.com/prometheus/prometheus/cmd/prometheus|v0.316.0|8 min|$prometheus_tags|-ldflags=$prometheus_ldflags
EOF
}

hash_module() {
	find "$here/$1" -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) |
		sort | xargs cat | sha256sum | cut -c1-12
}

# The platforms the image (test/images, `make image`) is built for: it carries restic
# for each.
image_platforms="linux/amd64 linux/arm64"

# build_one builds one tool for this machine, or with an eighth argument os/arch,
# cross-built for that platform: cached apart (the key ends in -os-arch, unless it is
# this machine's own platform, whose binary is the plain build's) and linked under
# bin/tools/os-arch/.
build_one() {
	local name=$1 mod=$2 pkg=$3 version=$4 took=$5 tags=$6 flags=$7 platform=${8:-}
	local key dest start tagflag=() goenv=() suffix="" linkdir=$bindir what=$name
	[ "$tags" = - ] || tagflag=("-tags=$tags")
	if [ -n "$platform" ]; then
		goenv=("GOOS=${platform%/*}" "GOARCH=${platform#*/}")
		linkdir=$bindir/${platform/\//-}
		what="$name for $platform"
		[ "$platform" = "$(go env GOOS)/$(go env GOARCH)" ] || suffix=-${platform/\//-}
	fi
	key="$name-$version-$(hash_module "$mod")$suffix"
	dest="$cache/$key/$name"
	if [ ! -x "$dest" ]; then
		echo "tools: building $what $version from the Go module proxy (up to $took cold on 2 cores)"
		mkdir -p "$cache/$key"
		start=$(date +%s)
		(cd "$here/$mod" && env "${goenv[@]}" CGO_ENABLED=0 go build -trimpath "${tagflag[@]}" "$flags" -o "$dest.tmp" "$pkg")
		mv "$dest.tmp" "$dest"
		echo "tools: built $what in $(($(date +%s) - start)) s"
	fi
	mkdir -p "$linkdir"
	ln -sfn "$dest" "$linkdir/$name"
}

platform=""
if [ "${1:-}" = --platform ]; then
	if [ $# -ne 3 ] || [ "$3" != restic ] || [[ $2 != linux/?* ]]; then
		echo "usage: $0 --platform linux/ARCH restic" >&2
		exit 2
	fi
	platform=$2
	shift 2
fi

want=" $* "
found=0
while IFS='|' read -r name mod pkg version took tags flags; do
	[ -n "$name" ] || continue
	if [ $# -gt 0 ] && [[ $want != *" $name "* ]]; then
		continue
	fi
	found=$((found + 1))
	build_one "$name" "$mod" "$pkg" "$version" "$took" "$tags" "$flags" "$platform"
	if [ $# -eq 0 ] && [ "$name" = restic ]; then
		for p in $image_platforms; do
			build_one "$name" "$mod" "$pkg" "$version" "$took" "$tags" "$flags" "$p"
		done
	fi
done < <(tools_table)

if [ $# -gt 0 ] && [ "$found" -ne $# ]; then
	echo "tools: unknown tool in: $*" >&2
	exit 2
fi
if [ -n "$platform" ]; then
	echo "tools: ready in $bindir/${platform/\//-}"
else
	echo "tools: ready in $bindir"
fi
