// Package cluster runs a real single-node Kubernetes cluster on this machine for the
// end-to-end tests and `make demo`: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy, kubelet and containerd with runc, bound to 127.0.0.1,
// with every file under one state directory and a teardown that leaves nothing behind.
//
// Use it with `make cluster-up` (then `export KUBECONFIG=$(bin/holdfast-cluster
// kubeconfig)`), `make cluster-images` after changing Holdfast, `make cluster-status`
// and `make cluster-down`; from Go, New("").Up(ctx) and Down(ctx). There is one
// cluster per machine (fixed ports, /var/lib/kubelet); Lock serialises up and down.
//
// What code running on it can rely on:
//   - Images holdfast:dev (the image of `make image`, built for this machine only:
//     holdfast and restic in /usr/local/bin, default user 65532), busybox:holdfast-local
//     and pause:holdfast-local (package test/images) are imported; pods must use
//     imagePullPolicy: Never, as nothing can be pulled.
//   - The node is NodeName with InternalIP 127.0.0.1 and kubelet root /var/lib/kubelet,
//     so the agent DaemonSet mounts /var/lib/kubelet/pods as on a real node.
//   - Pods live on the CNI bridge BridgeName (PodCIDR) and can reach each other, any
//     Service's cluster IP (kube-proxy) and the API server; the API server reaches pod
//     IPs (webhooks, with --enable-aggregator-routing). Pods cannot reach services
//     bound to the host's 127.0.0.1 (run MinIO as a pod behind a Service instead).
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
package cluster
