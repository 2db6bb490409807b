package cluster

import "testing"

func TestMountsNodeKubeletRoot(t *testing.T) {
	roots := []string{"/node-2/kubelet", "/node-3/kubelet"}
	for _, tc := range []struct {
		name, mountinfo string
		want            bool
	}{
		{"node 2's bind, state dir on the root file system",
			"68 67 254:0 /tmp/holdfast-cluster-test/node-2/kubelet /var/lib/kubelet rw,relatime shared:2 - ext4 /dev/vda rw", true},
		{"node 2's bind, state dir on a file system of its own",
			"68 67 0:40 /node-2/kubelet /var/lib/kubelet rw,relatime shared:2 - tmpfs tmpfs rw", true},
		{"the first node's kubelet root",
			"45 27 254:0 /var/lib/kubelet /var/lib/kubelet rw,relatime shared:1 - ext4 /dev/vda rw", false},
		{"node 2's directory mounted elsewhere (a container's hostPath)",
			"80 70 254:0 /tmp/holdfast-cluster-test/node-2/kubelet/pods /host/pods ro,relatime master:2 - ext4 /dev/vda rw", false},
		{"escaped mount point",
			`68 67 254:0 /tmp/a\040b/node-3/kubelet /var/lib/kubelet rw - ext4 /dev/vda rw`, true},
		{"empty", "", false},
	} {
		if got := mountsNodeKubeletRoot(tc.mountinfo, "/var/lib/kubelet", roots); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDaemonBase(t *testing.T) {
	for name, want := range map[string]struct {
		base string
		node int
	}{
		"kubelet":                 {"kubelet", 1},
		"kubelet-2":               {"kubelet", 2},
		"containerd-3":            {"containerd", 3},
		"kube-controller-manager": {"kube-controller-manager", 1},
		"kube-proxy":              {"kube-proxy", 1},
	} {
		if base, node := daemonBase(name); base != want.base || node != want.node {
			t.Errorf("daemonBase(%q) = %q, %d; want %q, %d", name, base, node, want.base, want.node)
		}
	}
}

func TestNodeLayout(t *testing.T) {
	c := New("/tmp/holdfast-cluster-test")
	first, second := c.nodeAt(0), c.nodeAt(1)
	if first.Name != NodeName || first.IP != NodeIP || first.Bridge != BridgeName || first.PodCIDR != PodCIDR ||
		first.KubeletRoot != c.KubeletRoot || first.cgroupRoot != "" || first.suffix != "" || first.dir != c.StateDir {
		t.Errorf("the first node differs from the single-node cluster's: %+v", first)
	}
	if second.Name != "holdfast-local-2" || second.IP != "127.0.0.2" || second.Bridge != "holdfast1" ||
		second.PodCIDR != "10.244.1.0/24" || second.KubeletRoot != "/tmp/holdfast-cluster-test/node-2/kubelet" ||
		second.cgroupRoot != "/holdfast-local-2" || second.cniNetwork != "holdfast-2" {
		t.Errorf("second node: %+v", second)
	}
	// A shim socket is the directory plus 65 bytes; a socket path has at most 107.
	for i := 0; i < MaxNodes; i++ {
		if l := len(c.nodeAt(i).shimSocketDir()) + 65; l > 107 {
			t.Errorf("node %d: shim socket paths of %d bytes", i+1, l)
		}
	}
}
