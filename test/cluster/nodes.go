package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// MaxNodes is the most nodes the cluster runs. Each node takes a loopback address
// (127.0.0.N), a /24 of 10.244.0.0/16 on its own bridge and a cgroup root; more than a
// few would only cost memory (about 150 MB a node) without proving anything new.
const MaxNodes = 4

// NodesEnv is the environment variable New reads the number of nodes from.
const NodesEnv = "HOLDFAST_CLUSTER_NODES"

// Node is one node of the cluster. The first is the single-node cluster's node
// (NodeName, NodeIP, BridgeName, PodCIDR, kubelet root /var/lib/kubelet); node N > 1
// is holdfast-local-N on 127.0.0.N with bridge holdfast<N-1> and pod range
// 10.244.<N-1>.0/24, and its own kubelet and containerd run in a mount namespace of
// their own in which /var/lib/kubelet is the node's own directory.
type Node struct {
	// Name is the Node object's name (and the kubernetes.io/hostname label).
	Name string
	// IP is the node's InternalIP; its kubelet listens there.
	IP string
	// KubeletRoot is the node's kubelet root as seen from the host (and from tests):
	// /var/lib/kubelet for the first node, <state>/node-N/kubelet for the others,
	// whose own processes and pods see it at /var/lib/kubelet.
	KubeletRoot string
	// PodCIDR is the node's pod range on Bridge.
	PodCIDR string
	// Bridge is the node's CNI bridge.
	Bridge string

	index      int
	bridgeIP   string
	cniNetwork string
	// dir holds the node's containerd, CNI, config and pod-log files: the state
	// directory itself for the first node (the single-node layout), node-N under it
	// for the others (short, because containerd's shim sockets live there and a
	// socket path has at most 107 bytes).
	dir string
	// cgroupRoot is the kubelet's cgroupRoot: "" (the hierarchies' roots, so pods
	// live under /kubepods) for the first node, /holdfast-local-N for the others.
	cgroupRoot string
	// suffix tells the node's daemons and certificates apart: "" for the first
	// node, "-N" for node N.
	suffix string
}

// nodeAt describes node i (0 is the first).
func (c *Cluster) nodeAt(i int) Node {
	if i == 0 {
		return Node{Name: NodeName, IP: NodeIP, KubeletRoot: c.KubeletRoot, PodCIDR: PodCIDR, Bridge: BridgeName,
			bridgeIP: BridgeIP, cniNetwork: CNINetwork, dir: c.StateDir}
	}
	n := strconv.Itoa(i + 1)
	dir := c.path("node-" + n)
	return Node{
		Name:        NodeName + "-" + n,
		IP:          "127.0.0." + n,
		KubeletRoot: filepath.Join(dir, "kubelet"),
		PodCIDR:     fmt.Sprintf("10.244.%d.0/24", i),
		Bridge:      fmt.Sprintf("holdfast%d", i),
		index:       i,
		bridgeIP:    fmt.Sprintf("10.244.%d.1", i),
		cniNetwork:  CNINetwork + "-" + n,
		dir:         dir,
		cgroupRoot:  "/" + NodeName + "-" + n,
		suffix:      "-" + n,
	}
}

func (n Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.dir}, elem...)...)
}

// shimSocketDir is where containerd puts its shims' sockets (64 hex digits each).
// The first node keeps the single-node path; the others use a shorter one.
func (n Node) shimSocketDir() string {
	if n.index == 0 {
		return n.path("containerd", "s")
	}
	return n.path("s")
}

// containerdSocket is the node's containerd socket.
func (n Node) containerdSocket() string { return n.path("containerd", "containerd.sock") }

// runcRoot is where runc keeps the state of the node's containers.
func (n Node) runcRoot() string { return n.path("containerd", "runc") }

// allNodes describes every node the cluster may have, running or not: Down and
// Leftovers look at all of them, since a failed `up` may have left any behind.
func (c *Cluster) allNodes() []Node {
	var ns []Node
	for i := 0; i < MaxNodes; i++ {
		ns = append(ns, c.nodeAt(i))
	}
	return ns
}

// NodeList returns the cluster's nodes: those of the running cluster, or, before
// `up`, the Nodes it will start.
func (c *Cluster) NodeList() []Node {
	var ns []Node
	for i := 0; i < c.nodeCount(); i++ {
		ns = append(ns, c.nodeAt(i))
	}
	return ns
}

// nodeCountPath records how many nodes `up` started, so that status, images and the
// e2e tests know without being told again.
func (c *Cluster) nodeCountPath() string { return c.path("node-count") }

// nodeCount is the number of nodes recorded by `up`, or Nodes when none is.
func (c *Cluster) nodeCount() int {
	if b, err := os.ReadFile(c.nodeCountPath()); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 1 && n <= MaxNodes {
			return n
		}
	}
	return c.Nodes
}

// nodesFromEnv parses NodesEnv: 1 when unset, -1 (which Up rejects) when invalid.
func nodesFromEnv() int {
	v := os.Getenv(NodesEnv)
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

func (c *Cluster) checkNodes() error {
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		return fmt.Errorf("nodes: want 1 to %d, got %d (%s=%q)", MaxNodes, c.Nodes, NodesEnv, os.Getenv(NodesEnv))
	}
	return nil
}

// startNode starts a node after the first: its cgroup root, its containerd in a new
// mount namespace, its images, its kubelet in the same namespace, and its address.
func (c *Cluster) startNode(ctx context.Context, n Node) error {
	steps := []struct {
		what string
		fn   func(context.Context, Node) error
	}{
		{"cgroup root", func(context.Context, Node) error { return makeCgroupRoot(n.cgroupRoot) }},
		{"containerd", c.startContainerd},
		{"images", c.importImages},
		{"kubelet", c.startKubelet},
		{"node registration", c.registerNodeAddress},
	}
	for _, s := range steps {
		if err := s.fn(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// nodeNamespaceCommand wraps a node's containerd so that it starts in a new mount
// namespace with slave propagation (mounts the host makes later propagate in; the
// node's own mounts — overlay root file systems, pod volumes, network namespaces —
// never propagate out) in which the node's kubelet directory is bind-mounted over
// the cluster's kubelet root. The first node's kubelet root (an rshared bind mount
// by then) is detached there first, so that the first node's pod volume mounts do
// not propagate into this namespace, not even under the bind. The bind is made
// rshared as the kubelet would make it: containerd refuses HostToContainer
// propagation from a private mount, and the node's pod volume mounts then reach its
// pods' rslave views (within the namespace only). Its shims and runc
// inherit the namespace, so a container's hostPath /var/lib/kubelet resolves to this
// node's directory; the kubelet joins it with nodeNamespaceJoin. The namespace dies
// with its last process.
func (c *Cluster) nodeNamespaceCommand(n Node, bin string, args ...string) (string, []string) {
	script := `{ ! mountpoint -q "$2" || umount --lazy "$2"; } && mount --bind "$1" "$2" && mount --make-rshared "$2" && shift 2 && exec "$@"`
	return "unshare", append([]string{"--mount", "--propagation", "slave", "--", "/bin/sh", "-c", script,
		"holdfast-node-namespace", n.KubeletRoot, c.KubeletRoot, bin}, args...)
}

// nodeNamespaceJoin runs bin in the mount namespace of the node's containerd.
func (c *Cluster) nodeNamespaceJoin(n Node, bin string, args ...string) (string, []string, error) {
	recs, err := c.records()
	if err != nil {
		return "", nil, err
	}
	for _, r := range recs {
		if r.Name == "containerd"+n.suffix && r.alive() {
			return "nsenter", append([]string{"--target", strconv.Itoa(r.PID), "--mount", "--", bin}, args...), nil
		}
	}
	return "", nil, fmt.Errorf("containerd%s is not running, so its mount namespace is gone", n.suffix)
}

// makeCgroupRoot creates a kubelet's cgroupRoot in every hierarchy. A new cpuset
// cgroup has no CPUs and no memory nodes, so they are copied from the parent (the
// kubelet and runc fill in the cgroups below it themselves).
func makeCgroupRoot(root string) error {
	for _, h := range cgroupRoots() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if cur, err := os.ReadFile(filepath.Join(dir, f)); err != nil || strings.TrimSpace(string(cur)) != "" {
				continue
			}
			parent, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// nodeNamespaceProcesses lists the processes that live in a node's mount namespace:
// those in which the cluster's kubelet root is a bind mount of a node's kubelet
// directory. Down stops them with the rest, and Leftovers reports any that survive.
func (c *Cluster) nodeNamespaceProcesses() []int {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	var roots []string
	for _, n := range c.allNodes()[1:] {
		roots = append(roots, strings.TrimPrefix(n.KubeletRoot, c.StateDir))
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err != nil || ns == self {
			continue
		}
		if st, _ := procState(pid); st == "Z" {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/mountinfo")
		if err != nil {
			continue
		}
		if mountsNodeKubeletRoot(string(b), c.KubeletRoot, roots) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsNodeKubeletRoot reports whether a mountinfo table mounts a node's kubelet
// directory (the mount's root ends with one of roots, relative to the state
// directory, whatever file system holds it) at kubeletRoot.
func mountsNodeKubeletRoot(mountinfo, kubeletRoot string, roots []string) bool {
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || unescapeMount(f[4]) != kubeletRoot {
			continue
		}
		root := unescapeMount(f[3])
		for _, r := range roots {
			if strings.HasSuffix(root, r) {
				return true
			}
		}
	}
	return false
}

// removeCgroupTree removes dir and every cgroup below it, deepest first (a cgroup can
// only be removed when it has no children and no processes).
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// NodePath returns a host path at which the file p is seen as the node's kubelet and
// pods see it. For the first node that is p; for the others it goes through
// /proc/<kubelet pid>/root, because their volume mounts (projected tokens, local PVs)
// exist only in their mount namespace, while <state>/node-N/kubelet on the host holds
// the bare directories. It fails when the node's kubelet does not run.
func (c *Cluster) NodePath(n Node, p string) (string, error) {
	if n.index == 0 {
		return p, nil
	}
	recs, err := c.records()
	if err != nil {
		return "", err
	}
	for _, r := range recs {
		if r.Name == "kubelet"+n.suffix && r.alive() {
			return filepath.Join("/proc", strconv.Itoa(r.PID), "root", p), nil
		}
	}
	return "", fmt.Errorf("the kubelet of %s is not running", n.Name)
}
