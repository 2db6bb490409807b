package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-dev/holdfast/test/images"
)

func itoa(i int) string { return strconv.Itoa(i) }

// writeConfigs writes the kubeconfigs and the config files of containerd, CNI,
// kube-proxy and the kubelet.
func (c *Cluster) writeConfigs() error {
	kubeconfigs := map[string][2]string{ // file: {cert, user}
		"kubeconfig":                           {"admin", "holdfast-admin"},
		"config/controller-manager.kubeconfig": {"controller-manager", "system:kube-controller-manager"},
		"config/scheduler.kubeconfig":          {"scheduler", "system:kube-scheduler"},
		"config/kube-proxy.kubeconfig":         {"kube-proxy", "system:kube-proxy"},
		"config/kubelet.kubeconfig":            {"kubelet-client", "system:node:" + NodeName},
	}
	for file, v := range kubeconfigs {
		if err := c.writeKubeconfig(c.path(file), v[0], v[1]); err != nil {
			return err
		}
	}
	files := map[string]string{
		"config/containerd.toml":         c.containerdConfig(),
		"cni/net.d/10-holdfast.conflist": c.cniConfig(),
		"config/kubelet.yaml":            c.kubeletConfig(),
		"config/kube-proxy.yaml":         c.kubeProxyConfig(),
		"config/resolv.conf":             "# The holdfast local cluster has no DNS: pods use Service environment variables and IPs.\n",
	}
	for file, content := range files {
		if err := os.WriteFile(c.path(file), []byte(content), 0o644); err != nil {
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

// containerdConfig keeps every containerd path under the state directory (root,
// state, shim sockets, runc state, network namespaces, the opt directory) and turns
// off NRI, whose socket would live outside it.
func (c *Cluster) containerdConfig() string {
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
`, c.path("containerd", "root"), c.path("containerd", "state"), c.ContainerdSocket(),
		c.path("containerd", "s"), c.path("containerd", "opt"), images.Pause,
		c.Runc, c.path("containerd", "runc"), c.CNIBinDir, c.path("cni", "net.d"), NodeIP)
}

// cniConfig is a bridge network without masquerading (pods talk only to each other
// and to the node), host-local IPAM with its state under the state directory, and
// portmap for hostPort.
func (c *Cluster) cniConfig() string {
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
`, CNINetwork, BridgeName, PodCIDR, BridgeIP, c.path("cni", "ipam"))
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	rec, err := c.start("containerd", []string{"PATH=" + c.ToolsBin + ":" + os.Getenv("PATH")}, c.tool("containerd"),
		"--config="+c.path("config", "containerd.toml"), "--log-level=warn")
	if err != nil {
		return err
	}
	ok := waitFor(ctx, time.Minute, 200*time.Millisecond, func() bool {
		if !rec.alive() {
			return true
		}
		return exec.CommandContext(ctx, c.tool("ctr"), "--address", c.ContainerdSocket(), "version").Run() == nil
	})
	if !rec.alive() || !ok {
		return fmt.Errorf("containerd did not come up; log %s:\n%s", rec.Log, tail(rec.Log, 15))
	}
	return nil
}

// ImportImages rebuilds the images (holdfast from the current checkout) and imports
// them into the running cluster's containerd, replacing the previous ones. Pods
// created afterwards run the new holdfast binary; running pods keep the old one.
func (c *Cluster) ImportImages(ctx context.Context) error {
	if st := c.Status(ctx); !st.Ready {
		return fmt.Errorf("the cluster is not up: %s", st.Detail)
	}
	return c.importImages(ctx)
}

// importImages builds the image archives and imports them into containerd's k8s.io
// namespace, where the kubelet finds them.
func (c *Cluster) importImages(ctx context.Context) error {
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
	for _, a := range archives {
		out, err := exec.CommandContext(ctx, c.tool("ctr"), "--address", c.ContainerdSocket(), "-n", "k8s.io",
			"images", "import", "--snapshotter", "overlayfs", a.Path).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w\n%s", a.Path, err, out)
		}
		c.logf("images: imported %s", a.Ref)
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
`, NodeName, NodeIP, kubeProxyHealthzPort, kubeProxyMetricsPort, PodCIDR, c.path("config", "kube-proxy.kubeconfig"))
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	rec, err := c.start("kube-proxy", nil, c.tool("kube-proxy"), "--config="+c.path("config", "kube-proxy.yaml"), "--v=1")
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, &http.Client{Timeout: 2 * time.Second}, "http://"+NodeIP+":"+itoa(kubeProxyHealthzPort)+"/livez", time.Minute)
}

func (c *Cluster) kubeletConfig() string {
	pki := func(f string) string { return c.path("pki", f) }
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
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
`, NodeIP, kubeletPort, kubeletHealthzPort, c.ContainerdSocket(), pki("ca.crt"),
		pki("kubelet-serving.crt"), pki("kubelet-serving.key"), c.path("pod-logs"), c.path("config", "resolv.conf"))
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	if err := os.MkdirAll(c.KubeletRoot, 0o750); err != nil {
		return err
	}
	rec, err := c.start("kubelet", nil, c.tool("kubelet"),
		"--config="+c.path("config", "kubelet.yaml"),
		"--kubeconfig="+c.path("config", "kubelet.kubeconfig"),
		"--root-dir="+c.KubeletRoot,
		"--node-ip="+NodeIP,
		"--hostname-override="+NodeName,
		"--v=1",
	)
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, rec, &http.Client{Timeout: 2 * time.Second}, "http://"+NodeIP+":"+itoa(kubeletHealthzPort)+"/healthz", 2*time.Minute)
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
