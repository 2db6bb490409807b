package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/holdfast-dev/holdfast/test/images"
)

// Addresses and names of the cluster. Every listener is on NodeIP.
const (
	NodeIP        = "127.0.0.1"
	NodeName      = "holdfast-local"
	APIServerPort = 16443
	// ServiceCIDR holds the Services' cluster IPs; APIServiceIP is the `kubernetes`
	// Service's, the first address of the range.
	ServiceCIDR  = "10.96.0.0/16"
	APIServiceIP = "10.96.0.1"
	// PodCIDR is the node's pod range on the CNI bridge BridgeName; BridgeIP is the
	// bridge's own address (the pods' gateway).
	PodCIDR    = "10.244.0.0/24"
	BridgeName = "holdfast0"
	BridgeIP   = "10.244.0.1"
	// CNINetwork names the CNI network (and its cache entries).
	CNINetwork = "holdfast"

	etcdClientPort        = 12379
	etcdPeerPort          = 12380
	controllerManagerPort = 10257
	schedulerPort         = 10259
	kubeletPort           = 10250
	kubeletHealthzPort    = 10248
	kubeProxyMetricsPort  = 10249
	kubeProxyHealthzPort  = 10256
)

// startOrder is the order `up` starts the daemons in; `down` stops them in reverse.
var startOrder = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}

// Cluster is the local cluster rooted at one state directory. The zero value is not
// usable; New fills in the defaults.
type Cluster struct {
	// StateDir holds everything the cluster writes except the kubelet's root: PKI,
	// kubeconfigs, configs, etcd data, containerd's root and state, CNI state,
	// images, logs and PID records.
	StateDir string
	// KubeletRoot is the kubelet's --root-dir: /var/lib/kubelet, the path the agent
	// DaemonSet mounts, as on a real node. Change it only in tests that know why: the
	// kubelet hard-codes a few sockets under /var/lib/kubelet whatever its root.
	KubeletRoot string
	// ToolsBin holds the binaries built by `make tools`.
	ToolsBin string
	// RepoRoot is the Holdfast checkout the holdfast image is built from.
	RepoRoot string
	// Runc, CNIBinDir and Busybox come from Debian packages (make cluster-packages).
	Runc      string
	CNIBinDir string
	Busybox   string
	// Nodes is how many nodes `up` starts (1 to MaxNodes; New takes it from
	// $HOLDFAST_CLUSTER_NODES, default 1). The first node is the single-node
	// cluster's; see Node for the others.
	Nodes int
	// Log receives progress lines; nil prints nothing.
	Log func(format string, args ...any)

	// archives are the images built by the first import, imported into every node.
	archives []images.Archive
	// preexistingVeths are the host's veths before `up`, kept by Down for Leftovers
	// once the record of them is deleted with the state directory.
	preexistingVeths []string
}

// DefaultStateDir is $HOLDFAST_CLUSTER_DIR, or /var/lib/holdfast-cluster.
func DefaultStateDir() string {
	if d := os.Getenv("HOLDFAST_CLUSTER_DIR"); d != "" {
		return d
	}
	return "/var/lib/holdfast-cluster"
}

// RepoRoot is the Holdfast checkout, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// New returns the cluster in stateDir (DefaultStateDir when empty) with the default
// tool locations; $HOLDFAST_TOOLS_BIN overrides the tools directory and
// $HOLDFAST_CLUSTER_NODES the number of nodes (default 1).
func New(stateDir string) *Cluster {
	if stateDir == "" {
		stateDir = DefaultStateDir()
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	repo := RepoRoot()
	tools := os.Getenv("HOLDFAST_TOOLS_BIN")
	if tools == "" {
		tools = filepath.Join(repo, "bin", "tools")
	}
	return &Cluster{
		StateDir:    stateDir,
		KubeletRoot: "/var/lib/kubelet",
		ToolsBin:    tools,
		RepoRoot:    repo,
		Runc:        "/usr/sbin/runc",
		CNIBinDir:   "/usr/lib/cni",
		Busybox:     "/bin/busybox",
		Nodes:       nodesFromEnv(),
	}
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

func (c *Cluster) tool(name string) string { return filepath.Join(c.ToolsBin, name) }

func (c *Cluster) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(format, args...)
	}
}

// APIServerURL is where the API server listens.
func (c *Cluster) APIServerURL() string {
	return "https://" + NodeIP + ":" + strconv.Itoa(APIServerPort)
}

// Kubeconfig is the path of a cluster-admin kubeconfig (certificates embedded).
func (c *Cluster) Kubeconfig() string { return c.path("kubeconfig") }

// ContainerdSocket is the first node's containerd gRPC socket, for `ctr --address`.
func (c *Cluster) ContainerdSocket() string { return c.nodeAt(0).containerdSocket() }

// NodeContainerdSocket is the containerd socket of node, for `ctr --address`.
func (c *Cluster) NodeContainerdSocket(node Node) string { return node.containerdSocket() }

// Clientset returns a client for the cluster as cluster admin.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// missingPrerequisites lists what `make tools` or `make cluster-packages` has to
// provide before `up` can work.
func (c *Cluster) missingPrerequisites() []string {
	var missing []string
	for _, t := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "kubectl", "containerd", "containerd-shim-runc-v2", "ctr", "restic"} {
		if _, err := os.Stat(c.tool(t)); err != nil {
			missing = append(missing, c.tool(t)+" (make tools)")
		}
	}
	for _, p := range []string{c.Runc, filepath.Join(c.CNIBinDir, "bridge"), filepath.Join(c.CNIBinDir, "host-local"), filepath.Join(c.CNIBinDir, "portmap"), filepath.Join(c.CNIBinDir, "loopback"), c.Busybox} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p+" (make cluster-packages)")
		}
	}
	for _, p := range []string{"iptables", "conntrack", "ip", "unshare", "nsenter", "mount", "umount", "mountpoint"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p+" (make cluster-packages)")
		}
	}
	return missing
}

// Up starts the cluster with Nodes nodes and returns once every node is Ready, the
// images are imported and the default ServiceAccount exists. It is a no-op when the
// cluster already runs with as many nodes. When it fails, whatever it started keeps
// running for inspection; Down removes it.
func (c *Cluster) Up(ctx context.Context) error {
	start := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root (mounts, network namespaces, cgroups)")
	}
	if err := c.checkNodes(); err != nil {
		return err
	}
	if m := c.missingPrerequisites(); len(m) > 0 {
		return fmt.Errorf("missing prerequisites:\n  %s", strings.Join(m, "\n  "))
	}
	if st := c.Status(ctx); st.Ready {
		if n := c.nodeCount(); n != c.Nodes {
			return fmt.Errorf("the cluster in %s runs with %d nodes, not %d; `make cluster-down` first", c.StateDir, n, c.Nodes)
		}
		c.logf("cluster: already up (%s)", c.StateDir)
		return nil
	} else if len(st.Components) > 0 {
		c.logf("cluster: a previous cluster in %s is partly up; tearing it down first", c.StateDir)
		if err := c.Down(ctx); err != nil {
			return err
		}
	}
	if busy := c.busyPorts(); len(busy) > 0 {
		return fmt.Errorf("addresses the cluster needs are in use: %v (another local cluster in a different HOLDFAST_CLUSTER_DIR, or a test's?)", busy)
	}
	for _, d := range []string{"", "logs", "pids", "etcd", "containerd", "cni/net.d", "cni/ipam", "pod-logs", "images", "config"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := c.saveHostSettings(); err != nil {
		return err
	}
	if err := os.WriteFile(c.nodeCountPath(), []byte(strconv.Itoa(c.Nodes)+"\n"), 0o644); err != nil {
		return err
	}
	if err := c.writePKI(); err != nil {
		return fmt.Errorf("PKI: %w", err)
	}
	if err := c.writeConfigs(); err != nil {
		return err
	}

	first := c.nodeAt(0)
	onFirst := func(fn func(context.Context, Node) error) func(context.Context) error {
		return func(ctx context.Context) error { return fn(ctx, first) }
	}
	steps := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"pod network", c.setUpNetwork},
		{"containerd", onFirst(c.startContainerd)},
		{"images", onFirst(c.importImages)},
		{"kubelet", onFirst(c.startKubelet)},
		{"node registration", onFirst(c.registerNodeAddress)},
	}
	// The other nodes start after the first node's kubelet has made /var/lib/kubelet
	// its rshared mount, so that their namespaces bind their own directory over it.
	for i := 1; i < c.Nodes; i++ {
		n := c.nodeAt(i)
		steps = append(steps, struct {
			what string
			fn   func(context.Context) error
		}{"node " + n.Name, func(ctx context.Context) error { return c.startNode(ctx, n) }})
	}
	steps = append(steps, []struct {
		what string
		fn   func(context.Context) error
	}{
		{"kube-proxy", c.startKubeProxy},
		{"nodes Ready and default ServiceAccount", c.waitReady},
	}...)
	for _, s := range steps {
		t := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
		c.logf("cluster: %s ready in %.1fs", s.what, time.Since(t).Seconds())
	}
	c.logf("cluster: up in %.1fs; KUBECONFIG=%s", time.Since(start).Seconds(), c.Kubeconfig())
	return nil
}

// busyPorts lists the cluster's fixed addresses that something already listens on:
// the control plane's and the first node's on NodeIP, each other node's kubelet on
// its own address.
func (c *Cluster) busyPorts() []string {
	addrs := map[string][]int{NodeIP: {etcdClientPort, etcdPeerPort, APIServerPort, controllerManagerPort, schedulerPort,
		kubeletPort, kubeletHealthzPort, kubeProxyMetricsPort, kubeProxyHealthzPort}}
	for i := 1; i < c.Nodes; i++ {
		addrs[c.nodeAt(i).IP] = []int{kubeletPort, kubeletHealthzPort}
	}
	var busy []string
	for ip, ports := range addrs {
		for _, p := range ports {
			addr := net.JoinHostPort(ip, strconv.Itoa(p))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				busy = append(busy, addr)
				continue
			}
			l.Close()
		}
	}
	sort.Strings(busy)
	return busy
}

// adminHTTP is an HTTP client that presents the admin certificate and trusts the CA.
func (c *Cluster) adminHTTP() (*http.Client, error) {
	return c.tlsClient("admin")
}

func (c *Cluster) tlsClient(certName string) (*http.Client, error) {
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(c.path("pki", certName+".crt"), c.path("pki", certName+".key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// waitHTTP waits until url answers 200, failing early when the daemon rec dies.
func (c *Cluster) waitHTTP(ctx context.Context, rec *processRecord, client *http.Client, url string, timeout time.Duration) error {
	var last string
	ok := waitFor(ctx, timeout, 200*time.Millisecond, func() bool {
		if !rec.alive() {
			return true
		}
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK
	})
	if !rec.alive() {
		return fmt.Errorf("%s exited; last lines of %s:\n%s", rec.Name, rec.Log, tail(rec.Log, 15))
	}
	if !ok {
		return fmt.Errorf("%s not healthy at %s after %s (last: %s); log %s:\n%s", rec.Name, url, timeout, last, rec.Log, tail(rec.Log, 15))
	}
	return nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// registerNodeAddress waits for the node's kubelet to register the node and gives it
// its InternalIP (127.0.0.1 for the first node). The kubelet refuses to report a
// loopback node IP itself (it logs "nodeIP can't be loopback address" and leaves the
// addresses alone), but the API server needs an address to reach the kubelet for
// logs, exec and port-forward, and hostNetwork pods take theirs from it.
func (c *Cluster) registerNodeAddress(ctx context.Context, n Node) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	var node *corev1.Node
	if !waitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() bool {
		node, err = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		return err == nil
	}) {
		return fmt.Errorf("node %s not registered: %v; kubelet log:\n%s", n.Name, err, tail(c.path("logs", "kubelet"+n.suffix+".log"), 20))
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && a.Address == n.IP {
			return nil
		}
	}
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}]}}`, n.IP, n.Name)
	_, err = cs.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	return err
}

// nodeReady reports whether the node is Ready and, if not, why.
func nodeReady(node *corev1.Node) (bool, string) {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, fmt.Sprintf("node %s Ready=%s (%s: %s)", node.Name, cond.Status, cond.Reason, cond.Message)
		}
	}
	return false, "node " + node.Name + " has no Ready condition yet"
}

// waitReady waits for what a test needs before creating pods: every node is Ready
// and the default namespace has its ServiceAccount and root CA ConfigMap (made by the
// controller manager).
func (c *Cluster) waitReady(ctx context.Context) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	var why string
	ok := waitFor(ctx, 3*time.Minute, 250*time.Millisecond, func() bool {
		for _, n := range c.NodeList() {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				why = err.Error()
				return false
			}
			var ready bool
			if ready, why = nodeReady(node); !ready {
				return false
			}
		}
		if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			why = "default ServiceAccount: " + err.Error()
			return false
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			why = "kube-root-ca.crt: " + err.Error()
			return false
		}
		return true
	})
	if !ok {
		return fmt.Errorf("not ready after 3m: %s; kubelet log:\n%s", why, tail(c.path("logs", "kubelet.log"), 20))
	}
	return nil
}

// ComponentStatus is one daemon as Status sees it.
type ComponentStatus struct {
	Name    string
	PID     int
	Running bool
	Log     string
}

// State is what Status found.
type State struct {
	Components []ComponentStatus
	// Nodes is the number of nodes `up` started (or was starting).
	Nodes int
	// Ready is true when every daemon runs and every node is Ready.
	Ready bool
	// Detail explains Ready in one line.
	Detail string
}

// Status reports the recorded daemons and whether every node is Ready.
func (c *Cluster) Status(ctx context.Context) State {
	st := State{Nodes: c.nodeCount()}
	recs, err := c.records()
	if err != nil {
		st.Detail = err.Error()
		return st
	}
	running := 0
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		alive := r.alive()
		if alive {
			running++
		}
		st.Components = append(st.Components, ComponentStatus{Name: r.Name, PID: r.PID, Running: alive, Log: r.Log})
	}
	switch {
	case len(recs) == 0:
		st.Detail = "not running (no daemons recorded in " + c.StateDir + ")"
		return st
	case running < c.daemonCount(st.Nodes):
		st.Detail = fmt.Sprintf("%d of %d daemons running", running, c.daemonCount(st.Nodes))
		return st
	}
	cs, err := c.Clientset()
	if err != nil {
		st.Detail = err.Error()
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var details []string
	st.Ready = true
	for i := 0; i < st.Nodes; i++ {
		name := c.nodeAt(i).Name
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			st.Ready = false
			details = append(details, "node "+name+" not registered")
			continue
		} else if err != nil {
			st.Ready = false
			details = append(details, "API server: "+err.Error())
			break
		}
		ready, why := nodeReady(node)
		st.Ready = st.Ready && ready
		details = append(details, why)
	}
	st.Detail = strings.Join(details, "; ")
	return st
}

// daemonCount is how many daemons a cluster of n nodes runs: the control plane,
// kube-proxy and the first node's containerd and kubelet, plus a containerd and a
// kubelet for every other node.
func (c *Cluster) daemonCount(n int) int { return len(startOrder) + 2*(n-1) }

// LockPath is the machine-wide lock of the local cluster. There can be only one
// cluster per machine (fixed ports, /var/lib/kubelet, the bridge), so `up`, `down`
// and the cluster test serialise on it.
const LockPath = "/run/lock/holdfast-cluster.lock"

// Lock waits for the machine-wide cluster lock and returns its release function.
func Lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(LockPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	var lockErr error
	got := waitFor(ctx, 30*time.Minute, 250*time.Millisecond, func() bool {
		lockErr = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		return lockErr == nil
	})
	if !got {
		f.Close()
		return nil, fmt.Errorf("waiting for %s (another cluster up/down or test holds it): %w", LockPath, lockErr)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
