package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-dev/holdfast/test/images"
)

func itoa(i int) string { return strconv.Itoa(i) }

// writeConfigs writes the kubeconfigs and the config files of kube-proxy and of every
// node's containerd, CNI network and kubelet.
func (c *Cluster) writeConfigs() error {
	kubeconfigs := map[string][2]string{ // file: {cert, user}
		c.path("kubeconfig"):                           {"admin", "holdfast-admin"},
		c.path("config/controller-manager.kubeconfig"): {"controller-manager", "system:kube-controller-manager"},
		c.path("config/scheduler.kubeconfig"):          {"scheduler", "system:kube-scheduler"},
		c.path("config/kube-proxy.kubeconfig"):         {"kube-proxy", "system:kube-proxy"},
	}
	files := map[string]string{
		c.path("config/kube-proxy.yaml"): c.kubeProxyConfig(),
		c.path("config/resolv.conf"):     "# The holdfast local cluster has no DNS: pods use Service environment variables and IPs.\n",
	}
	for _, n := range c.NodeList() {
		for _, d := range []string{"config", "cni/net.d", "cni/ipam", "containerd", "pod-logs"} {
			if err := os.MkdirAll(n.path(d), 0o755); err != nil {
				return err
			}
		}
		kubeconfigs[n.path("config/kubelet.kubeconfig")] = [2]string{"kubelet-client" + n.suffix, "system:node:" + n.Name}
		files[n.path("config/containerd.toml")] = c.containerdConfig(n)
		files[n.path("cni/net.d/10-holdfast.conflist")] = c.cniConfig(n)
		files[n.path("config/kubelet.yaml")] = c.kubeletConfig(n)
	}
	for file, v := range kubeconfigs {
		if err := c.writeKubeconfig(file, v[0], v[1]); err != nil {
			return err
		}
	}
	for file, content := range files {
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	pki := func(f string) string { return c.path("pki", f) }
	client := "https://" + NodeIP + ":" + itoa(etcdClientPort)
	peer := "http://" + NodeIP + ":" + itoa(etcdPeerPort)
	rec, err := c.start("etcd", nil, c.tool("etcd"),
		"--name=holdfast",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=holdfast="+peer,
		"--cert-file="+pki("etcd.crt"), "--key-file="+pki("etcd.key"),
		"--trusted-ca-file="+pki("ca.crt"), "--client-cert-auth",
		"--unsafe-no-fsync", // a throwaway test cluster on a shared disk: speed over durability
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	hc, err := c.tlsClient("etcd")
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, hc, client+"/health", time.Minute)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	pki := func(f string) string { return c.path("pki", f) }
	rec, err := c.start("kube-apiserver", nil, c.tool("kube-apiserver"),
		"--bind-address="+NodeIP, "--advertise-address="+NodeIP, "--secure-port="+itoa(APIServerPort),
		// A loopback address cannot be a Service endpoint: the `kubernetes` Service
		// keeps no endpoints and pods reach the API server through HOLDFAST-API.
		"--endpoint-reconciler-type=none",
		"--etcd-servers=https://"+NodeIP+":"+itoa(etcdClientPort),
		"--etcd-cafile="+pki("ca.crt"), "--etcd-certfile="+pki("etcd.crt"), "--etcd-keyfile="+pki("etcd.key"),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--authorization-mode=Node,RBAC",
		// OwnerReferencesPermissionEnforcement as OpenShift has it: setting
		// blockOwnerDeletion on an ownerReference needs update on the owner's
		// finalizers, which Holdfast's roles must grant.
		"--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
		"--allow-privileged=true",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		// Webhooks and aggregated APIs are called at their endpoints (pod IPs on the
		// bridge), so they work without kube-proxy on the API server's path.
		"--enable-aggregator-routing=true",
		"--requestheader-client-ca-file="+pki("ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pki("front-proxy-client.crt"),
		"--proxy-client-key-file="+pki("front-proxy-client.key"),
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	hc, err := c.adminHTTP()
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, hc, c.APIServerURL()+"/readyz", 3*time.Minute)
}

// startControllers starts the controller manager and the scheduler. Neither is waited
// for here: waitReady sees their work (the default ServiceAccount, kube-root-ca.crt).
func (c *Cluster) startControllers(ctx context.Context) error {
	pki := func(f string) string { return c.path("pki", f) }
	kc := c.path("config", "controller-manager.kubeconfig")
	if _, err := c.start("kube-controller-manager", nil, c.tool("kube-controller-manager"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address="+NodeIP, "--secure-port="+itoa(controllerManagerPort),
		"--cert-dir="+c.path("config", "controller-manager-certs"),
		"--cluster-signing-cert-file="+pki("ca.crt"), "--cluster-signing-key-file="+pki("ca.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--service-account-private-key-file="+pki("sa.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+ServiceCIDR,
		// No node IPAM: the CNI bridge's host-local IPAM owns PodCIDR.
		"--controllers=*,-nodeipam",
		"--leader-elect=false",
		"--v=1",
	); err != nil {
		return err
	}
	kc = c.path("config", "scheduler.kubeconfig")
	_, err := c.start("kube-scheduler", nil, c.tool("kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address="+NodeIP, "--secure-port="+itoa(schedulerPort),
		"--leader-elect=false",
		"--v=1",
	)
	return err
}

// containerdConfig keeps every path of the node's containerd under the node's
// directory (root, state, shim sockets, runc state, network namespaces, the opt
// directory) and turns off NRI, whose socket would live outside it.
func (c *Cluster) containerdConfig(n Node) string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[plugins]
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = %[4]q
  [plugins.'io.containerd.internal.v1.opt']
    path = %[5]q
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[6]q
  [plugins.'io.containerd.cri.v1.runtime']
    # The VM lacks CAP_SYS_RESOURCE: without this every sandbox fails in runc with
    # "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = %[7]q
          Root = %[8]q
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[9]q]
      conf_dir = %[10]q
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = %[11]q
    stream_server_port = "0"
`, n.path("containerd", "root"), n.path("containerd", "state"), n.containerdSocket(),
		n.shimSocketDir(), n.path("containerd", "opt"), images.Pause,
		c.Runc, n.runcRoot(), c.CNIBinDir, n.path("cni", "net.d"), n.IP)
}

// cniConfig is the node's bridge network without masquerading (pods talk only to
// each other and to the nodes), host-local IPAM with its state under the node's
// directory, and portmap for hostPort.
func (c *Cluster) cniConfig(n Node) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.cniNetwork, n.Bridge, n.PodCIDR, n.bridgeIP, n.path("cni", "ipam"))
}

// startContainerd starts the node's containerd; a node after the first gets it in a
// mount namespace of its own (nodeNamespaceCommand).
func (c *Cluster) startContainerd(ctx context.Context, n Node) error {
	bin, args := c.tool("containerd"), []string{"--config=" + n.path("config", "containerd.toml"), "--log-level=warn"}
	if n.index > 0 {
		if err := os.MkdirAll(n.KubeletRoot, 0o750); err != nil {
			return err
		}
		if err := os.MkdirAll(c.KubeletRoot, 0o750); err != nil {
			return err
		}
		bin, args = c.nodeNamespaceCommand(n, bin, args...)
	}
	rec, err := c.start("containerd"+n.suffix, []string{"PATH=" + c.ToolsBin + ":" + os.Getenv("PATH")}, bin, args...)
	if err != nil {
		return err
	}
	ok := waitFor(ctx, time.Minute, 200*time.Millisecond, func() bool {
		if !rec.alive() {
			return true
		}
		return exec.CommandContext(ctx, c.tool("ctr"), "--address", n.containerdSocket(), "version").Run() == nil
	})
	if !rec.alive() || !ok {
		return fmt.Errorf("containerd did not come up; log %s:\n%s", rec.Log, tail(rec.Log, 15))
	}
	return nil
}

// ImportImages rebuilds the images (holdfast from the current checkout) and imports
// them into every node's containerd, replacing the previous ones. Pods created
// afterwards run the new holdfast binary; running pods keep the old one.
func (c *Cluster) ImportImages(ctx context.Context) error {
	if st := c.Status(ctx); !st.Ready {
		return fmt.Errorf("the cluster is not up: %s", st.Detail)
	}
	c.archives = nil
	for _, n := range c.NodeList() {
		if err := c.importImages(ctx, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// importImages imports the image archives into the node's containerd, in the k8s.io
// namespace where the kubelet finds them. The first call builds them.
func (c *Cluster) importImages(ctx context.Context, n Node) error {
	// The archives are in the state directory, which Down removes: a Cluster that is
	// brought up again (the e2e story of a lost cluster) builds them again.
	missing := func(a images.Archive) bool {
		_, err := os.Stat(a.Path)
		return err != nil
	}
	if len(c.archives) == 0 || slices.ContainsFunc(c.archives, missing) {
		archives, err := images.Build(ctx, images.Options{
			RepoRoot: c.RepoRoot,
			Restic:   c.tool("restic"),
			Busybox:  c.Busybox,
			OutDir:   c.path("images"),
			Log:      c.logf,
		})
		if err != nil {
			return err
		}
		c.archives = archives
	}
	for _, a := range c.archives {
		out, err := exec.CommandContext(ctx, c.tool("ctr"), "--address", n.containerdSocket(), "-n", "k8s.io",
			"images", "import", "--snapshotter", "overlayfs", a.Path).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w\n%s", a.Path, err, out)
		}
		c.logf("images: imported %s into %s", a.Ref, n.Name)
	}
	return nil
}

func (c *Cluster) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: %[1]s
bindAddress: %[2]s
healthzBindAddress: %[2]s:%[3]d
metricsBindAddress: %[2]s:%[4]d
clusterCIDR: %[5]s
clientConnection:
  kubeconfig: %[6]s
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
nodePortAddresses: ["%[2]s/32"]
`, NodeName, NodeIP, kubeProxyHealthzPort, kubeProxyMetricsPort, c.clusterCIDR(), c.path("config", "kube-proxy.kubeconfig"))
}

// clusterCIDR is every node's pod range, for kube-proxy, which masquerades Service
// traffic from outside it: PodCIDR with one node, 10.244.0.0/16 with more.
func (c *Cluster) clusterCIDR() string {
	if c.Nodes > 1 {
		return "10.244.0.0/16"
	}
	return PodCIDR
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	rec, err := c.start("kube-proxy", nil, c.tool("kube-proxy"), "--config="+c.path("config", "kube-proxy.yaml"), "--v=1")
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, &http.Client{Timeout: 2 * time.Second}, "http://"+NodeIP+":"+itoa(kubeProxyHealthzPort)+"/livez", time.Minute)
}

// kubeletConfig is the node's kubelet configuration. A node after the first has its
// own cgroupRoot, so its pods' cgroups live apart from the first node's /kubepods.
func (c *Cluster) kubeletConfig(n Node) string {
	pki := func(f string) string { return c.path("pki", f) }
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: %[1]s
healthzPort: %[3]d
containerRuntimeEndpoint: unix://%[4]s
imageServiceEndpoint: unix://%[4]s
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[5]s
authorization:
  mode: Webhook
tlsCertFile: %[6]s
tlsPrivateKeyFile: %[7]s
rotateCertificates: false
serverTLSBootstrap: false
# kube-proxy owns the iptables chains.
makeIPTablesUtilChains: false
# A shared test machine: only evict when truly out of space, and never collect
# images, which cannot be pulled again (there is no registry).
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: %[8]s
resolvConf: %[9]s
clusterDomain: cluster.local
serializeImagePulls: false
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, n.IP, kubeletPort, kubeletHealthzPort, n.containerdSocket(), pki("ca.crt"),
		pki("kubelet-serving"+n.suffix+".crt"), pki("kubelet-serving"+n.suffix+".key"), n.path("pod-logs"), c.path("config", "resolv.conf"))
	if n.cgroupRoot != "" {
		cfg += "cgroupRoot: " + n.cgroupRoot + "\n"
	}
	return cfg
}

// startKubelet starts the node's kubelet with the cluster's kubelet root; a node after
// the first gets it in its containerd's mount namespace, where that root is the
// node's own directory.
func (c *Cluster) startKubelet(ctx context.Context, n Node) error {
	if err := os.MkdirAll(n.KubeletRoot, 0o750); err != nil {
		return err
	}
	bin, args := c.tool("kubelet"), []string{
		"--config=" + n.path("config", "kubelet.yaml"),
		"--kubeconfig=" + n.path("config", "kubelet.kubeconfig"),
		"--root-dir=" + c.KubeletRoot,
		"--node-ip=" + n.IP,
		"--hostname-override=" + n.Name,
		"--v=1",
	}
	if n.index > 0 {
		var err error
		if bin, args, err = c.nodeNamespaceJoin(n, bin, args...); err != nil {
			return err
		}
	}
	rec, err := c.start("kubelet"+n.suffix, nil, bin, args...)
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, &http.Client{Timeout: 2 * time.Second}, "http://"+n.IP+":"+itoa(kubeletHealthzPort)+"/healthz", 2*time.Minute)
}

// trimLines is a helper for command output.
func trimLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
