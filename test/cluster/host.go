package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// hostSysctls are the kernel settings the cluster changes (ip_forward by the CNI
// bridge, the rest by the cluster itself) or the kubelet may change (the kernel
// tunables it sets unless protectKernelDefaults is on). `up` records them before the
// first change and `down` puts them back.
var hostSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// hostPaths are directories outside the state directory that the cluster's programs
// create; `down` removes them when they did not exist before `up`.
func (c *Cluster) hostPaths() []string {
	return []string{c.KubeletRoot, "/var/log/containers", "/var/lib/cni", "/run/containerd"}
}

// hostSettings is what the host looked like before the first `up`.
type hostSettings struct {
	Sysctls map[string]string `json:"sysctls"`
	Existed map[string]bool   `json:"existed"`
	// Veths are the veth devices that existed before, which Leftovers ignores.
	Veths []string `json:"veths"`
}

func (c *Cluster) hostSettingsPath() string { return c.path("host-settings.json") }

// saveHostSettings records the host's settings unless a record exists already (a
// previous `up` that was not taken down must not overwrite the original values).
func (c *Cluster) saveHostSettings() error {
	if _, err := os.Stat(c.hostSettingsPath()); err == nil {
		return nil
	}
	hs := hostSettings{Sysctls: map[string]string{}, Existed: map[string]bool{}}
	for _, k := range hostSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			hs.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range c.hostPaths() {
		_, err := os.Stat(p)
		hs.Existed[p] = err == nil
	}
	hs.Veths = vethNames()
	b, _ := json.MarshalIndent(hs, "", "  ")
	return os.WriteFile(c.hostSettingsPath(), b, 0o644)
}

func (c *Cluster) loadHostSettings() (*hostSettings, error) {
	b, err := os.ReadFile(c.hostSettingsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var hs hostSettings
	return &hs, json.Unmarshal(b, &hs)
}

func setSysctl(key, value string) error {
	return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
}

// apiNATRule is the one NAT rule the cluster adds itself (see the package comment):
// the `kubernetes` Service's cluster IP and port go to the API server on 127.0.0.1.
func apiNATRule() []string {
	return []string{"-d", APIServiceIP + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", "holdfast local cluster: kubernetes Service to the API server",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", NodeIP, APIServerPort)}
}

var apiNATJump = []string{"-m", "comment", "--comment", "holdfast local cluster", "-j", "HOLDFAST-API"}

func iptables(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// setUpNetwork turns on what pod networking needs and installs HOLDFAST-API. The CNI
// bridge itself appears with the first pod.
func (c *Cluster) setUpNetwork(ctx context.Context) error {
	for k, v := range map[string]string{
		"net/ipv4/ip_forward": "1",
		// Lets the kernel route pod packets DNATed to 127.0.0.1 (HOLDFAST-API) and
		// the replies back, as kube-proxy does for localhost node ports.
		"net/ipv4/conf/all/route_localnet": "1",
		// Service traffic between two pods on the bridge must pass through
		// iptables for kube-proxy's NAT to be undone on the reply.
		"net/bridge/bridge-nf-call-iptables": "1",
	} {
		if err := setSysctl(k, v); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	_, _ = iptables(ctx, "-t", "nat", "-N", "HOLDFAST-API")
	if _, err := iptables(ctx, "-t", "nat", "-F", "HOLDFAST-API"); err != nil {
		return err
	}
	if _, err := iptables(ctx, append([]string{"-t", "nat", "-A", "HOLDFAST-API"}, apiNATRule()...)...); err != nil {
		return err
	}
	if _, err := iptables(ctx, append([]string{"-t", "nat", "-C", "PREROUTING"}, apiNATJump...)...); err != nil {
		if _, err := iptables(ctx, append([]string{"-t", "nat", "-I", "PREROUTING", "1"}, apiNATJump...)...); err != nil {
			return err
		}
	}
	return nil
}

// tearDownNetwork removes every node's bridge and its ports, kube-proxy's chains,
// HOLDFAST-API and any CNI rule tagged with a node's network name. Each step tolerates
// a half-made network. It returns every error it met, joined.
func (c *Cluster) tearDownNetwork(ctx context.Context) error {
	var errs []error
	for _, n := range c.allNodes() {
		errs = append(errs, removeBridge(ctx, n.Bridge))
	}
	if _, err := os.Stat(c.tool("kube-proxy")); err == nil {
		if out, err := exec.CommandContext(ctx, c.tool("kube-proxy"), "--cleanup", "--v=0").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("kube-proxy --cleanup: %w: %s", err, tailString(string(out), 5)))
		}
	}
	errs = append(errs, removeChains(ctx))
	for _, n := range c.allNodes() {
		errs = append(errs, removeCNIRules(ctx, n.cniNetwork))
	}
	return errors.Join(errs...)
}

// removeBridge deletes a CNI bridge and whatever veth is still attached to it (they
// normally die with the pods' network namespaces).
func removeBridge(ctx context.Context, bridge string) error {
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "master", bridge).Output(); err == nil {
		for _, l := range trimLines(out) {
			f := strings.Fields(l)
			if len(f) > 1 {
				name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
				_ = exec.CommandContext(ctx, "ip", "link", "del", name).Run()
			}
		}
	}
	if exec.CommandContext(ctx, "ip", "link", "show", bridge).Run() == nil {
		if out, err := exec.CommandContext(ctx, "ip", "link", "del", bridge).CombinedOutput(); err != nil {
			return fmt.Errorf("deleting %s: %w: %s", bridge, err, out)
		}
	}
	return nil
}

// removeCNIRules deletes the NAT rules the CNI portmap plugin tags with the network's
// name (left behind when containers die without a CNI DEL) and the per-container
// chains they jumped to.
func removeCNIRules(ctx context.Context, network string) error {
	out, err := iptables(ctx, "-t", "nat", "-S")
	if err != nil {
		return err
	}
	tag := fmt.Sprintf(`name: \"%s\"`, network)
	var chains []string
	for _, l := range trimLines(out) {
		if !strings.HasPrefix(l, "-A ") || !strings.Contains(l, tag) {
			continue
		}
		if i := strings.Index(l, " -j CNI-"); i >= 0 {
			chains = append(chains, strings.Fields(l[i+4:])[0])
		}
		// Re-run the rule as a delete through the shell so its quoting survives.
		if b, err := exec.CommandContext(ctx, "sh", "-c", "iptables -w 5 -t nat -D "+l[3:]).CombinedOutput(); err != nil {
			return fmt.Errorf("deleting %q: %w: %s", l, err, b)
		}
	}
	for _, ch := range chains {
		_, _ = iptables(ctx, "-t", "nat", "-F", ch)
		_, _ = iptables(ctx, "-t", "nat", "-X", ch)
	}
	return nil
}

// clusterChainPrefixes name the iptables chains of the cluster: kube-proxy's and the
// kubelet's (KUBE-), and HOLDFAST-API.
var clusterChainPrefixes = []string{"KUBE-", "HOLDFAST-"}

func isClusterChain(name string) bool {
	for _, p := range clusterChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// clusterRules lists, per iptables program and table, the rules of built-in chains
// that jump to a cluster chain, and the cluster chains themselves.
func clusterRules(ctx context.Context) (jumps, chains map[[2]string][]string) {
	jumps, chains = map[[2]string][]string{}, map[[2]string][]string{}
	for _, prog := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := exec.CommandContext(ctx, prog, "-w", "5", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			key := [2]string{prog, table}
			for _, l := range trimLines(out) {
				f := strings.Fields(l)
				if len(f) < 2 {
					continue
				}
				switch {
				case f[0] == "-N" && isClusterChain(f[1]):
					chains[key] = append(chains[key], f[1])
				case f[0] == "-A" && !isClusterChain(f[1]) && jumpsToClusterChain(l):
					jumps[key] = append(jumps[key], l)
				}
			}
		}
	}
	return jumps, chains
}

func jumpsToClusterChain(rule string) bool {
	for _, p := range clusterChainPrefixes {
		if strings.Contains(rule, " -j "+p) || strings.Contains(rule, " -g "+p) {
			return true
		}
	}
	return false
}

// removeChains deletes every jump into a cluster chain and then the chains, in IPv4
// and IPv6, whoever made them (kube-proxy --cleanup leaves the kubelet's).
func removeChains(ctx context.Context) error {
	jumps, chains := clusterRules(ctx)
	var errs []error
	for key, rules := range jumps {
		for _, r := range rules {
			// Re-run the rule as a delete through the shell so that its quoting survives.
			cmd := fmt.Sprintf("%s -w 5 -t %s -D %s", key[0], key[1], r[3:])
			if b, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(string(b))))
			}
		}
	}
	for key, names := range chains {
		for _, ch := range names {
			_ = exec.CommandContext(ctx, key[0], "-w", "5", "-t", key[1], "-F", ch).Run()
		}
		for _, ch := range names {
			if b, err := exec.CommandContext(ctx, key[0], "-w", "5", "-t", key[1], "-X", ch).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s -X %s: %w: %s", key[0], key[1], ch, err, strings.TrimSpace(string(b))))
			}
		}
	}
	return errors.Join(errs...)
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// restoreHostSettings puts the recorded sysctls back and removes the host directories
// the cluster created (after removing from them what it put there).
func (c *Cluster) restoreHostSettings() error {
	hs, err := c.loadHostSettings()
	if err != nil || hs == nil {
		return err
	}
	var errs []error
	for k, v := range hs.Sysctls {
		if err := setSysctl(k, v); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", k, v, err))
		}
	}
	// The kubelet's symlinks to our pod logs, and libcni's cache of our network.
	if links, _ := filepath.Glob("/var/log/containers/*"); len(links) > 0 {
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, c.StateDir+"/") {
				errs = append(errs, os.Remove(l))
			}
		}
	}
	cache, _ := filepath.Glob("/var/lib/cni/results/" + CNINetwork + "-*")
	loopback, _ := filepath.Glob("/var/lib/cni/results/cni-loopback-*")
	for _, f := range append(cache, loopback...) {
		errs = append(errs, os.Remove(f))
	}
	for _, p := range c.hostPaths() {
		if hs.Existed[p] || p == c.KubeletRoot {
			continue // the kubelet root is removed with the mounts, see Down
		}
		if err := removeIfOnlyEmptyDirs(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeIfOnlyEmptyDirs removes dir when it holds nothing but empty directories, and
// leaves it (without error) when something else lives there.
func removeIfOnlyEmptyDirs(dir string) error {
	onlyDirs := true
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			onlyDirs = false
			return filepath.SkipAll
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) || !onlyDirs {
		return nil
	}
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// vethNames lists the host's veth devices.
func vethNames() []string {
	out, err := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range trimLines(out) {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}
