// Package cluster runs a real single-node Kubernetes cluster on this machine for the
// end-to-end tests and `make demo`: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy, kubelet and containerd with runc, bound to 127.0.0.1,
// with every file under one state directory and a teardown that leaves nothing behind.
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
package cluster
