#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs and nothing else, skipping what
# is already installed, and says what it installs and why. Package scripts must not
# start daemons on a test machine (there is no init system in a container, and a
# started daemon would outlive `make cluster-down`), so apt runs with a policy-rc.d
# that refuses every service start for the duration of the install.
set -euo pipefail

# package | why the cluster needs it
packages() {
	cat <<'LIST'
runc|the OCI runtime containerd's runc shim starts every container with
containernetworking-plugins|the CNI bridge, host-local, portmap and loopback plugins under /usr/lib/cni that give pods their network
iptables|the CNI bridge (masquerade), portmap and kube-proxy program packet filtering with it
conntrack|kube-proxy flushes stale connection tracking entries with it
busybox-static|the static busybox binary that becomes the busybox workload image
ca-certificates|the CA roots the holdfast image carries (test/images), as `make image` puts them in
util-linux|unshare and nsenter give a second node's containerd and kubelet a mount namespace of their own (NODES=2)
mount|mount, umount and mountpoint give that namespace its own /var/lib/kubelet (NODES=2)
LIST
}

missing=()
while IFS='|' read -r pkg why; do
	if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		continue
	fi
	echo "cluster-packages: installing $pkg: $why"
	missing+=("$pkg")
done < <(packages)

if [ ${#missing[@]} -eq 0 ]; then
	echo "cluster-packages: all installed (runc, containernetworking-plugins, iptables, conntrack, busybox-static, ca-certificates, util-linux, mount)"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "cluster-packages: installing packages needs root; run as root: apt-get install ${missing[*]}" >&2
	exit 1
fi

policy=/usr/sbin/policy-rc.d
restore_policy() { :; }
if [ ! -e "$policy" ]; then
	# 101 = "action not allowed": invoke-rc.d then skips starting the service.
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	restore_policy() { rm -f "$policy"; }
fi
trap restore_policy EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "cluster-packages: installed ${missing[*]}"
