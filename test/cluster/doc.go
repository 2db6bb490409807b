// Package cluster runs a real Kubernetes cluster of one node (or a few) on this
// machine for the end-to-end tests and `make demo`: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy, and per node a kubelet and
// containerd with runc, bound to loopback addresses, with every file under one state
// directory and a teardown that leaves nothing behind.
//
// Use it with `make cluster-up` (NODES=2 for two nodes; then `export
// KUBECONFIG=$(bin/holdfast-cluster kubeconfig)`), `make cluster-images` after
// changing Holdfast, `make cluster-status` and `make cluster-down`; from Go,
// New("").Up(ctx) and Down(ctx), with Cluster.Nodes (or $HOLDFAST_CLUSTER_NODES) for
// more than one node. There is one cluster per machine (fixed ports,
// /var/lib/kubelet); Lock serialises up and down. The README beside this file says
// what each node costs.
//
// What code running on it can rely on:
//   - Images holdfast:dev (the image of `make image`, built for this machine only:
//     holdfast and restic in /usr/local/bin, default user 65532), busybox:holdfast-local
//     and pause:holdfast-local (package test/images) are imported; pods must use
//     imagePullPolicy: Never, as nothing can be pulled.
//   - The (first) node is NodeName with InternalIP 127.0.0.1 and kubelet root
//     /var/lib/kubelet, so the agent DaemonSet mounts /var/lib/kubelet/pods as on a
//     real node; NodeList describes every node (see "More nodes" below).
//   - Pods live on the CNI bridge BridgeName (PodCIDR; the other nodes' pods on
//     bridges of their own) and can reach each other on every node, any Service's
//     cluster IP (kube-proxy) and the API server; the API server reaches pod IPs
//     (webhooks, with --enable-aggregator-routing). Pods cannot reach services bound
//     to the host's 127.0.0.1 (run MinIO as a pod behind a Service instead).
//   - There is no cluster DNS and pods get an empty resolv.conf, so no name lookup
//     leaves the machine: use cluster IPs or the Service environment variables.
//
// How pods reach the API server. The API server listens on 127.0.0.1 only, and the
// API rejects loopback addresses as Service endpoints, so neither the `kubernetes`
// Service's automatic endpoint nor kube-proxy can point pods at it. Running the
// Holdfast pods with hostNetwork and KUBERNETES_SERVICE_HOST=127.0.0.1 would work for
// API calls, but their pod IP would then be 127.0.0.1 too, which breaks the webhook
// Service (its EndpointSlice cannot hold a loopback address) and makes the test
// install differ from a user's. So the cluster keeps pods on the CNI bridge, runs
// kube-proxy (iptables mode) for every ordinary Service (MinIO, webhooks), and adds
// one NAT rule of its own (chain HOLDFAST-API) that sends the `kubernetes` Service's
// cluster IP and port to 127.0.0.1 (with route_localnet on, as kube-proxy does for
// localhost node ports). In-cluster clients work unchanged, and the overlay for this
// cluster only switches images to imagePullPolicy: Never.
//
// The kubelet also refuses to report a loopback node IP, so `up` sets the node's
// InternalIP itself (see registerNodeAddress); kubectl logs, exec and port-forward
// depend on it.
//
// More nodes. Node N > 1 (Node, nodeAt) is holdfast-local-N with InternalIP
// 127.0.0.N, its own kubelet (listening on 127.0.0.N, with a client and a serving
// certificate of its own), its own containerd (socket, root, state, runc root and
// shim sockets under <state>/node-N), its pods on bridge holdfast<N-1> with
// 10.244.<N-1>.0/24, and its pods' cgroups under the kubelet's cgroupRoot
// /holdfast-local-N in every cgroup v1 hierarchy (cgroupfs driver). What makes it a
// node of its own to the agent is its view of /var/lib/kubelet: its containerd
// starts in a new mount namespace (unshare, slave propagation from the host) in
// which the first node's kubelet root is detached and <state>/node-N/kubelet is
// bind-mounted, rshared, at /var/lib/kubelet; its kubelet joins that namespace
// (nsenter) with --root-dir=/var/lib/kubelet. The kubelet makes its pod volume mounts
// (emptyDir, projected tmpfs, local PVs) there, and containerd, its shims and runc
// resolve a hostPath /var/lib/kubelet there too, so the agent DaemonSet's pod on
// node N sees node N's pods only, with HostToContainer propagation as on node 1.
// Nothing the node mounts propagates out; the namespace dies with its last process,
// and its mounts (and the network namespaces they pin) with it.
//
// All nodes share the host's network namespace, so one kube-proxy (with clusterCIDR
// 10.244.0.0/16) programs Services for all of them; running one per node would make
// them fight over the same iptables chains. Pods on different bridges reach each
// other through the host's routing (no masquerading, no overlay), and HOLDFAST-API
// matches by destination only, so it serves every bridge. Services with
// internalTrafficPolicy or externalTrafficPolicy Local are programmed for the first
// node's endpoints only. Every kubelet reports the whole machine's CPU and memory as
// its capacity.
//
// A second node costs about 120 MiB of resident memory (its kubelet and containerd;
// 820–830 MiB for the idle two-node cluster against 690–710 MiB for one node) and
// 1.5–2.5 s of `up` (10.5–14 s until both nodes are Ready); README.md has the figures.
package cluster
