package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-dev/holdfast/test/images"
)

// TestTwoNodes is the second node's contract with the multi-node e2e stories: both
// nodes are Ready with their own names, addresses and kubelet certificates; the
// agent's view of /var/lib/kubelet/pods (a hostPath DaemonSet) shows on each node
// exactly that node's pods; pods on the second node get their cgroups under its
// cgroup root; a pod there reaches the API server in-cluster, a Service and a pod on
// the first node by IP, and the first node's pod reaches it back; a local PV with
// node affinity to the second node is bound and written there; the second node's
// mounts stay in its namespace and the first node's stay out of it; and Down, after
// the second node's containerd crashed, leaves nothing of either node.
func TestTwoNodes(t *testing.T) {
	c := testCluster(t)
	c.Nodes = 2
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	downDone := false
	t.Cleanup(func() {
		dumpLogs(t, c)
		if !downDone {
			if err := c.Down(context.Background()); err != nil {
				t.Errorf("down: %v", err)
			}
		}
	})

	start := time.Now()
	if err := c.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("up with 2 nodes (both Ready) took %s", time.Since(start).Round(time.Millisecond))
	logMemory(t, c, "2 nodes, idle")
	cs, err := c.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	nodes := c.NodeList()
	if len(nodes) != 2 {
		t.Fatalf("NodeList: %+v", nodes)
	}
	first, second := nodes[0], nodes[1]
	if first.Name != NodeName || first.IP != NodeIP || first.KubeletRoot != c.KubeletRoot {
		t.Errorf("the first node is not the single-node cluster's: %+v", first)
	}
	if second.Name == first.Name || second.IP != "127.0.0.2" || second.Bridge == first.Bridge || second.PodCIDR == first.PodCIDR {
		t.Errorf("the second node shares something with the first: %+v", second)
	}
	if st := c.Status(ctx); !st.Ready || st.Nodes != 2 || len(st.Components) != len(startOrder)+2 {
		t.Fatalf("status: %+v", st)
	}
	for _, n := range nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ready, why := nodeReady(node); !ready {
			t.Errorf("%s", why)
		}
		if ip := internalIP(node); ip != n.IP {
			t.Errorf("node %s has InternalIP %q, want %s", n.Name, ip, n.IP)
		}
		assertKubeletServes(t, c, n)
	}

	ns := "two-nodes"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAccount(ctx, t, cs, ns)
	// The readers first, so that the other pods' volume mounts appear after they
	// started: only HostToContainer propagation inside the node's namespace shows them.
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, readerDaemonSet(ns), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readers := waitForPods(ctx, t, cs, ns, "app=volume-reader", 2)

	for _, n := range nodes {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, serverPod(ns, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "server-" + n.Name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
			},
		}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createLocalVolume(ctx, t, c, cs, ns, nodeLocalPVName, second.Name)
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, claimWriterPod(ns), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	servers := map[string]*corev1.Pod{}
	for _, n := range nodes {
		servers[n.Name] = waitForPod(ctx, t, cs, ns, "app=server-"+n.Name)
		if got := servers[n.Name].Spec.NodeName; got != n.Name {
			t.Fatalf("server pinned to %s runs on %s", n.Name, got)
		}
	}
	writer := waitForPod(ctx, t, cs, ns, "app=claim-writer")

	// The local PV: bound, the pod scheduled to the PV's node, the data on the host,
	// and the bind mount visible to the second node's reader, not the first's.
	if writer.Spec.NodeName != second.Name {
		t.Errorf("the claim's pod runs on %s, not on the PV's node %s", writer.Spec.NodeName, second.Name)
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "claim", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != nodeLocalPVName {
		t.Fatalf("claim: %v %+v", err, pvc.Status)
	}
	if got, err := os.ReadFile(filepath.Join(c.path("local-volumes", nodeLocalPVName), "claim.txt")); err != nil || string(got) != "written on "+second.Name+"\n" {
		t.Errorf("the local PV's directory on the host holds %q, %v", got, err)
	}
	readerOn := map[string]string{}
	for _, r := range readers {
		readerOn[r.Spec.NodeName] = r.Name
	}
	pvInReader := "/host/pods/" + string(writer.UID) + "/volumes/kubernetes.io~local-volume/" + nodeLocalPVName + "/claim.txt"
	if out := kubectl(ctx, t, c, "exec", "-n", ns, readerOn[second.Name], "--", "cat", pvInReader); out != "written on "+second.Name+"\n" {
		t.Errorf("the second node's reader read %q from the local PV", out)
	}
	inNode := filepath.Join(c.KubeletRoot, "pods", string(writer.UID), "volumes", "kubernetes.io~local-volume", nodeLocalPVName, "claim.txt")
	if p, err := c.NodePath(second, inNode); err != nil {
		t.Error(err)
	} else if got, err := os.ReadFile(p); err != nil || string(got) != "written on "+second.Name+"\n" {
		t.Errorf("NodePath %s: %q, %v", p, got, err)
	}
	if out, err := kubectlErr(ctx, c, "exec", "-n", ns, readerOn[first.Name], "--", "ls", "/host/pods/"+string(writer.UID)); err == nil {
		t.Errorf("the first node's reader sees the second node's pod: %s", out)
	}

	// Each node's /var/lib/kubelet/pods, as the agent sees it, holds exactly the
	// UIDs of the pods the API places on that node; the host sees the same in the
	// node's kubelet root.
	all, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		var want []string
		for _, p := range all.Items {
			if p.Spec.NodeName == n.Name {
				want = append(want, string(p.UID))
			}
		}
		sort.Strings(want)
		got := strings.Fields(kubectl(ctx, t, c, "exec", "-n", ns, readerOn[n.Name], "--", "ls", "/host/pods"))
		sort.Strings(got)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("node %s: the agent's view of /var/lib/kubelet/pods is %v, the API's pods on the node are %v", n.Name, got, want)
		}
		entries, _ := os.ReadDir(filepath.Join(n.KubeletRoot, "pods"))
		var onHost []string
		for _, e := range entries {
			onHost = append(onHost, e.Name())
		}
		if strings.Join(onHost, " ") != strings.Join(want, " ") {
			t.Errorf("node %s: %s/pods on the host is %v, want %v", n.Name, n.KubeletRoot, onHost, want)
		}
	}

	// Mounts: the second node's volume mounts (its pods' tokens, the local PV) stay in
	// its namespace, and the first node's do not reach that namespace.
	for _, m := range mounts() {
		if under(m.point, second.KubeletRoot) {
			t.Errorf("the second node's mount %s shows on the host", m.point)
		}
	}
	kubelet2 := recordPID(t, c, "kubelet-2")
	nsMounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", kubelet2))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(nsMounts), "/pods/"+string(writer.UID)+"/volumes/kubernetes.io~local-volume/"+nodeLocalPVName) {
		t.Errorf("the local PV's mount is not in the second node's namespace:\n%s", nsMounts)
	}
	if uid := string(servers[first.Name].UID); strings.Contains(string(nsMounts), uid) {
		t.Errorf("a mount of the first node's pod %s is in the second node's namespace:\n%s", uid, nsMounts)
	}

	// cgroups: the second node's pods under its cgroup root, the first node's under
	// /kubepods as before.
	for _, n := range nodes {
		cid := strings.TrimPrefix(servers[n.Name].Status.ContainerStatuses[0].ContainerID, "containerd://")
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", containerPID(t, cid)))
		want := n.cgroupRoot + "/kubepods/"
		if !strings.Contains(string(cg), ":memory:"+want) {
			t.Errorf("server on %s is not in a memory cgroup under %s:\n%s", n.Name, want, cg)
		}
	}

	// Traffic: the second node's pod to the API server (in-cluster), to the first
	// node's Service and pod IP; the first node's pod back to the second's pod IP
	// and Service; the API server to the second node's pod (webhooks) and kubelet.
	assertInClusterAPIAccess(ctx, t, c, servers[second.Name])
	for _, pair := range [][2]Node{{second, first}, {first, second}} {
		from, to := servers[pair[0].Name], pair[1]
		svc, err := cs.CoreV1().Services(ns).Get(ctx, to.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "served on " + to.Name + "\n"
		for _, url := range []string{
			"http://" + servers[to.Name].Status.PodIP + ":8080/name.txt",
			"http://" + svc.Spec.ClusterIP + "/name.txt",
		} {
			if got := wgetFromPod(ctx, t, c, ns, from.Name, url); got != want {
				t.Errorf("from %s to %s: %q, want %q", pair[0].Name, url, got, want)
			}
		}
	}
	if got := kubectl(ctx, t, c, "get", "--raw", "/api/v1/namespaces/"+ns+"/services/"+second.Name+":http/proxy/name.txt"); got != "served on "+second.Name+"\n" {
		t.Errorf("API server to the second node's pod through the service proxy: %q", got)
	}
	if logs := kubectl(ctx, t, c, "logs", "-n", ns, servers[second.Name].Name); logs != "serving on "+second.Name+"\n" {
		t.Errorf("kubectl logs of the second node's pod: %q", logs)
	}
	logMemory(t, c, "2 nodes, 5 pods")

	// The second node's containerd dies, as in a crash: its shims and containers keep
	// the namespace alive, and Down must still stop them and leave nothing.
	_ = syscall.Kill(recordPID(t, c, "containerd-2"), syscall.SIGKILL)
	start = time.Now()
	if err := c.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	downDone = true
	t.Logf("down took %s", time.Since(start).Round(time.Millisecond))
	assertNothingLeft(t, c)
}

// TestDownAfterPartialTwoNodeUp tears down a two-node cluster whose `up` stopped while
// starting the second node (its cgroup root made and its containerd running in its
// mount namespace, no kubelet), as after a failure, with a stray process in that
// namespace whose command line names nothing of the cluster; Leftovers must see the
// second node's traces before and none after.
func TestDownAfterPartialTwoNodeUp(t *testing.T) {
	c := testCluster(t)
	c.Nodes = 2
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		dumpLogs(t, c)
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	second := c.nodeAt(1)
	for _, d := range []string{"logs", "pids", "etcd", "containerd", "cni/net.d", "cni/ipam", "pod-logs", "images", "config"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	steps := []func(context.Context) error{
		func(context.Context) error { return c.saveHostSettings() },
		func(context.Context) error { return os.WriteFile(c.nodeCountPath(), []byte("2\n"), 0o644) },
		func(context.Context) error { return c.writePKI() },
		func(context.Context) error { return c.writeConfigs() },
		c.startEtcd, c.setUpNetwork,
		func(ctx context.Context) error { return c.startContainerd(ctx, c.nodeAt(0)) },
		func(context.Context) error { return makeCgroupRoot(second.cgroupRoot) },
		func(ctx context.Context) error { return c.startContainerd(ctx, second) },
	}
	for i, s := range steps {
		if err := s(ctx); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if st := c.Status(ctx); st.Ready || st.Nodes != 2 || len(st.Components) != 3 {
		t.Fatalf("status of a partial cluster: %+v", st)
	}
	recs, _ := c.records()
	var stray *exec.Cmd
	for _, r := range recs {
		if r.Name != "containerd-2" {
			continue
		}
		if !slices.Contains(c.nodeNamespaceProcesses(), r.PID) {
			t.Errorf("containerd-2 (pid %d) is not among the processes of the node's mount namespace %v", r.PID, c.nodeNamespaceProcesses())
		}
		stray = exec.Command("nsenter", "--target", itoa(r.PID), "--mount", "--", "sleep", "600")
		stray.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = stray.Wait() }()
		t.Cleanup(func() { _ = stray.Process.Kill() })
	}
	if stray == nil {
		t.Fatal("no containerd-2 recorded")
	}
	var left string
	// nsenter has entered the namespace once it has become sleep.
	if !waitFor(ctx, 10*time.Second, 50*time.Millisecond, func() bool {
		left = strings.Join(c.Leftovers(), "\n")
		return strings.Contains(left, fmt.Sprintf("process %d in a node's mount namespace", stray.Process.Pid))
	}) {
		t.Errorf("Leftovers before Down misses the stray process %d in the node's mount namespace:\n%s", stray.Process.Pid, left)
	}
	for _, want := range []string{"cgroup /sys/fs/cgroup/memory" + second.cgroupRoot, second.path("config", "containerd.toml")} {
		if !strings.Contains(left, want) {
			t.Errorf("Leftovers before Down misses %q:\n%s", want, left)
		}
	}
	if err := c.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	assertNothingLeft(t, c)
}

// recordPID is the PID of a recorded daemon.
func recordPID(t *testing.T, c *Cluster, name string) int {
	t.Helper()
	recs, err := c.records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == name {
			return r.PID
		}
	}
	t.Fatalf("no %s recorded", name)
	return 0
}

// internalIP is the node's InternalIP address.
func internalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// assertKubeletServes checks that the node's kubelet listens on the node's address
// with a serving certificate for that address, signed by the cluster CA (what the API
// server verifies for logs and exec).
func assertKubeletServes(t *testing.T, c *Cluster, n Node) {
	t.Helper()
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	addr := net.JoinHostPort(n.IP, itoa(kubeletPort))
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Errorf("kubelet of %s at %s: %v", n.Name, addr, err)
		return
	}
	defer conn.Close()
	cert := conn.ConnectionState().PeerCertificates[0]
	if cert.Subject.CommonName != "system:node:"+n.Name {
		t.Errorf("kubelet of %s serves as %q", n.Name, cert.Subject.CommonName)
	}
}

// waitForPods waits until count pods match selector and all are Ready.
func waitForPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string, count int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var why string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			why = err.Error()
			return false, nil
		}
		pods = list.Items
		ready := 0
		for _, p := range pods {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		why = fmt.Sprintf("%d pods, %d Ready", len(pods), ready)
		return len(pods) == count && ready == count, nil
	})
	if err != nil {
		t.Fatalf("pods %s in %s: %v; %s", selector, ns, err, why)
	}
	return pods
}

// serverPod serves its node's name over HTTP, pinned to the node by its hostname
// label (so the scheduler places it).
func serverPod(ns string, n Node) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server-" + n.Name, Namespace: ns, Labels: map[string]string{"app": "server-" + n.Name}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": n.Name},
			Containers: []corev1.Container{{
				Name: "app", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "mkdir -p /www && echo 'served on " + n.Name + "' > /www/name.txt && echo 'serving on " + n.Name + "' && exec httpd -f -p 8080 -h /www"},
				Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				// The node's kubelet probes its pod on its own bridge.
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/name.txt", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
			}},
		},
	}
}

const nodeLocalPVName = "two-nodes-local"

// claimWriterPod writes its node's name into the claim; nothing pins it, so only the
// PV's node affinity brings it to its node.
func claimWriterPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "claim-writer", Namespace: ns, Labels: map[string]string{"app": "claim-writer"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "app", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Env:          []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
				Command:      []string{"sh", "-c", `echo "written on $NODE" > /claim/claim.txt && exec sleep 3600`},
				VolumeMounts: []corev1.VolumeMount{{Name: "claim", MountPath: "/claim"}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/claim/claim.txt"}}},
					PeriodSeconds: 1},
			}},
			Volumes: []corev1.Volume{{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}}},
		},
	}
}

// wgetFromPod fetches url from inside the pod, retrying until kube-proxy has
// programmed a new Service (it does so once it sees the EndpointSlice).
func wgetFromPod(ctx context.Context, t *testing.T, c *Cluster, ns, pod, url string) string {
	t.Helper()
	var out string
	var lastErr error
	_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		// (busybox 1.35's wget crashes with -T, so the attempt's context bounds it.)
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, lastErr = kubectlErr(attempt, c, "exec", "-n", ns, pod, "--", "wget", "-q", "-O-", url)
		return lastErr == nil, nil
	})
	if lastErr != nil {
		t.Errorf("wget %s in %s: %v: %s", url, pod, lastErr, out)
	}
	return out
}

// kubectlErr runs kubectl and returns its output and error instead of failing.
func kubectlErr(ctx context.Context, c *Cluster, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, c.tool("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...).CombinedOutput()
	return string(out), err
}

// logMemory logs the resident memory of the cluster's processes.
func logMemory(t *testing.T, c *Cluster, when string) {
	t.Helper()
	rss, procs := c.MemoryUsage()
	t.Logf("memory (%s): %d MiB resident in %d processes", when, rss>>20, procs)
}
