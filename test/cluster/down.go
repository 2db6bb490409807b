package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Down stops every process of the cluster (on every node, including whatever lives
// in a node's mount namespace, which dies with its last process and takes that
// node's mounts with it), undoes every mount under the state directory and the
// kubelet root, removes the CNI bridges, the iptables rules, the nodes' cgroups and
// the files, and restores the host settings `up` changed. It works after a failed
// or partial `up` and when nothing runs, so running it twice is fine.
func (c *Cluster) Down(ctx context.Context) error {
	start := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("tearing the local cluster down needs root")
	}
	if _, err := os.Stat(c.StateDir); errors.Is(err, os.ErrNotExist) {
		if leftovers := c.Leftovers(); len(leftovers) == 0 {
			c.logf("cluster: nothing to tear down in %s", c.StateDir)
			return nil
		}
	}
	if hs, _ := c.loadHostSettings(); hs != nil {
		c.preexistingVeths = hs.Veths
	}
	var errs []error
	recs, err := c.records()
	errs = append(errs, err)
	// The kubelets first, so they restart nothing; then the containers, while the
	// runtimes' state still says which they are; then everything else.
	for _, r := range recs {
		if base, _ := daemonBase(r.Name); base == "kubelet" {
			errs = append(errs, stopRecord(ctx, r, 15*time.Second))
		}
	}
	for _, n := range c.allNodes() {
		errs = append(errs, c.killContainers(ctx, n))
	}
	for _, r := range recs {
		errs = append(errs, stopRecord(ctx, r, 15*time.Second))
	}
	errs = append(errs, c.killStragglers(ctx))
	errs = append(errs, c.removeCgroups())
	errs = append(errs, c.unmountAll())
	errs = append(errs, c.tearDownNetwork(ctx))
	errs = append(errs, c.restoreHostSettings())
	errs = append(errs, c.removeFiles())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down %s: %w", c.StateDir, err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		return fmt.Errorf("left behind after teardown:\n  %s", strings.Join(left, "\n  "))
	}
	c.logf("cluster: down in %.1fs", time.Since(start).Seconds())
	return nil
}

// killContainers force-deletes every container runc knows in the node's runc root.
// Killing the shims alone would orphan the container processes.
func (c *Cluster) killContainers(ctx context.Context, n Node) error {
	root := filepath.Join(n.runcRoot(), "k8s.io")
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, c.Runc, "--root", root, "list", "-q").Output()
	if err != nil {
		return fmt.Errorf("runc list: %w", err)
	}
	var errs []error
	for _, id := range trimLines(out) {
		if b, err := exec.CommandContext(ctx, c.Runc, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("runc delete --force %s: %w: %s", id, err, strings.TrimSpace(string(b))))
		}
	}
	return errors.Join(errs...)
}

// killStragglers SIGKILLs whatever still runs on behalf of the cluster (shims,
// container processes, anything left in a node's mount namespace) and waits until it
// is gone.
func (c *Cluster) killStragglers(ctx context.Context) error {
	left := func() []int {
		return append(processesUsing([]string{c.StateDir, c.KubeletRoot}), c.nodeNamespaceProcesses()...)
	}
	for _, pid := range left() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if !waitFor(ctx, 15*time.Second, 50*time.Millisecond, func() bool { return len(left()) == 0 }) {
		return fmt.Errorf("processes still running after SIGKILL: %v", left())
	}
	return nil
}

// cgroupRoots are the mount points of the cgroup hierarchies.
func cgroupRoots() []string {
	var roots []string
	for _, m := range mounts() {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			roots = append(roots, m.point)
		}
	}
	return roots
}

// removeCgroups removes the kubelets' cgroups in every hierarchy: the first node's
// kubepods and the other nodes' cgroup roots, with everything below them.
func (c *Cluster) removeCgroups() error {
	var errs []error
	for _, root := range cgroupRoots() {
		for _, dir := range c.cgroupDirs(root) {
			errs = append(errs, removeCgroupTree(dir))
		}
	}
	return errors.Join(errs...)
}

// cgroupDirs are the cgroups of every possible node in one hierarchy.
func (c *Cluster) cgroupDirs(hierarchy string) []string {
	dirs := []string{filepath.Join(hierarchy, "kubepods")}
	for _, n := range c.allNodes()[1:] {
		dirs = append(dirs, filepath.Join(hierarchy, n.cgroupRoot))
	}
	return dirs
}

type mountEntry struct{ point, fstype string }

// mounts parses /proc/self/mountinfo.
func mounts() []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []mountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 10 {
			continue
		}
		m := mountEntry{point: unescapeMount(fields[4])}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) {
				m.fstype = fields[i+1]
				break
			}
		}
		ms = append(ms, m)
	}
	return ms
}

// unescapeMount decodes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// clusterMounts are the mount points under the state directory or the kubelet root:
// overlay root file systems, network namespaces, volumes, the kubelet root itself.
func (c *Cluster) clusterMounts() []string {
	var out []string
	for _, m := range mounts() {
		if under(m.point, c.StateDir) || under(m.point, c.KubeletRoot) {
			out = append(out, m.point)
		}
	}
	return out
}

// unmountAll unmounts every cluster mount, deepest first, until none is left (mounts
// can be stacked, and propagation can add some back).
func (c *Cluster) unmountAll() error {
	for round := 0; round < 10; round++ {
		ms := c.clusterMounts()
		if len(ms) == 0 {
			return nil
		}
		sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
		for _, m := range ms {
			if err := syscall.Unmount(m, 0); err != nil {
				_ = syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
	if ms := c.clusterMounts(); len(ms) > 0 {
		return fmt.Errorf("still mounted: %s", strings.Join(ms, ", "))
	}
	return nil
}

// removeFiles deletes the state directory and the kubelet root. Nothing is mounted
// there any more, so RemoveAll cannot reach into a volume's real data.
func (c *Cluster) removeFiles() error {
	if ms := c.clusterMounts(); len(ms) > 0 {
		return fmt.Errorf("refusing to delete files while mounted: %s", strings.Join(ms, ", "))
	}
	hs, _ := c.loadHostSettings()
	var errs []error
	errs = append(errs, os.RemoveAll(c.StateDir))
	if hs == nil || !hs.Existed[c.KubeletRoot] {
		errs = append(errs, os.RemoveAll(c.KubeletRoot))
	}
	return errors.Join(errs...)
}

// Leftovers lists whatever of the cluster still exists on the host, for every node it
// may have had: processes (also those in a node's mount namespace), mounts, network
// namespaces, the bridges and veth ports, iptables chains and CNI rules, cgroups and
// the state directory. Empty means the host is as before `up` (Down checks it).
func (c *Cluster) Leftovers() []string {
	var left []string
	for _, pid := range processesUsing([]string{c.StateDir, c.KubeletRoot}) {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		left = append(left, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	listed := map[int]bool{}
	for _, pid := range processesUsing([]string{c.StateDir, c.KubeletRoot}) {
		listed[pid] = true
	}
	for _, pid := range c.nodeNamespaceProcesses() {
		if listed[pid] {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		left = append(left, fmt.Sprintf("process %d in a node's mount namespace: %s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	for _, m := range c.clusterMounts() {
		left = append(left, "mount "+m)
	}
	for _, m := range mounts() {
		if m.fstype == "nsfs" && (under(m.point, c.StateDir) || under(m.point, "/run/netns") || under(m.point, "/var/run/netns")) {
			left = append(left, "network namespace "+m.point)
		}
	}
	for _, n := range c.allNodes() {
		if exec.Command("ip", "link", "show", n.Bridge).Run() == nil {
			left = append(left, "network device "+n.Bridge)
		}
	}
	before := map[string]bool{}
	veths := c.preexistingVeths
	if hs, _ := c.loadHostSettings(); hs != nil {
		veths = hs.Veths
	}
	for _, v := range veths {
		before[v] = true
	}
	for _, v := range vethNames() {
		if !before[v] {
			left = append(left, "network device (veth) "+v)
		}
	}
	jumps, chains := clusterRules(context.Background())
	for key, rules := range jumps {
		for _, r := range rules {
			left = append(left, fmt.Sprintf("%s -t %s: %s", key[0], key[1], r))
		}
	}
	for key, names := range chains {
		for _, ch := range names {
			left = append(left, fmt.Sprintf("%s -t %s: chain %s", key[0], key[1], ch))
		}
	}
	if out, err := exec.Command("iptables", "-w", "5", "-t", "nat", "-S").Output(); err == nil {
		for _, l := range trimLines(out) {
			for _, n := range c.allNodes() {
				if strings.Contains(l, `name: \"`+n.cniNetwork+`\"`) {
					left = append(left, "iptables -t nat (CNI): "+l)
				}
			}
		}
	}
	for _, root := range cgroupRoots() {
		for _, dir := range c.cgroupDirs(root) {
			if _, err := os.Stat(dir); err == nil {
				left = append(left, "cgroup "+dir)
			}
		}
	}
	for _, p := range []string{c.StateDir} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "directory "+p)
		}
	}
	return left
}
