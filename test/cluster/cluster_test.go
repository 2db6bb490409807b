package cluster

// These tests start the real cluster, so they need root, the binaries of `make tools`
// and the Debian packages of `make cluster-packages`. They are part of `go test ./...`
// (and so of `make test`, which builds the tools first) and are skipped only by
// -short (`make test-unit`). When a prerequisite is missing they fail and say which:
// a cluster test that cannot run is not a pass.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-dev/holdfast/test/images"
)

// testCluster returns a cluster in its own state directory, holding the machine-wide
// lock for the test's duration, after checking that it can run here.
func testCluster(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real cluster (about a minute); skipped by -short")
	}
	c := New(filepath.Join(os.TempDir(), "holdfast-cluster-test"))
	c.Nodes = 1 // whatever $HOLDFAST_CLUSTER_NODES says; the two-node tests set 2
	c.Log = t.Logf
	if os.Geteuid() != 0 {
		t.Fatal("the cluster test needs root (mounts, network namespaces, cgroups)")
	}
	if m := c.missingPrerequisites(); len(m) > 0 {
		t.Fatalf("missing prerequisites (run `make tools cluster-packages`):\n  %s", strings.Join(m, "\n  "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	unlock, err := Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	if st := New("").Status(ctx); len(st.Components) > 0 {
		t.Fatalf("a local cluster is up in %s (%s); `make cluster-down` first", DefaultStateDir(), st.Detail)
	}
	// A previous run of this test that crashed may have left its cluster behind.
	if err := c.Down(ctx); err != nil {
		t.Fatalf("cleaning up after a previous run: %v", err)
	}
	// Down keeps a kubelet root that existed before up, so the test could not tell
	// what the cluster left there.
	if _, err := os.Stat(c.KubeletRoot); err == nil {
		t.Fatalf("%s exists before the test started a kubelet; remove it (no kubelet may run here)", c.KubeletRoot)
	}
	return c
}

// assertNothingLeft fails the test for every trace of the cluster on the host.
func assertNothingLeft(t *testing.T, c *Cluster) {
	t.Helper()
	for _, l := range c.Leftovers() {
		t.Errorf("left behind: %s", l)
	}
	if _, err := os.Stat(c.KubeletRoot); err == nil {
		t.Errorf("left behind: %s", c.KubeletRoot)
	}
}

// dumpLogs shows the end of every daemon's log when the test failed.
func dumpLogs(t *testing.T, c *Cluster) {
	if !t.Failed() {
		return
	}
	recs, _ := c.records()
	for _, r := range recs {
		t.Logf("---- last lines of %s (%s):\n%s", r.Name, r.Log, tail(r.Log, 25))
	}
}

// TestClusterRunsPodsAndTearsDownClean is the harness's contract with the e2e suite:
// a pod with an init container writes into an emptyDir and a local-PV claim; a
// DaemonSet pod that mounts the kubelet's pods directory with HostToContainer
// propagation sees both (the PV and the token volume are mounts made after it
// started); kubectl exec and logs work; a pod reaches the API server through the
// `kubernetes` Service; Services and the API server reach pods; and after Down (with
// containerd crashed first) nothing is left: no process, mount, network namespace,
// network device, iptables chain, cgroup or file.
func TestClusterRunsPodsAndTearsDownClean(t *testing.T) {
	c := testCluster(t)
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
	t.Logf("up took %s", time.Since(start).Round(time.Millisecond))
	logMemory(t, c, "1 node, idle")
	cs, err := c.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := "cluster-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAccount(ctx, t, cs, ns)

	// The DaemonSet first, so that the writer's mounts appear after its container
	// started: only HostToContainer propagation lets it see them.
	ds := readerDaemonSet(ns)
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reader := waitForPod(ctx, t, cs, ns, "app=volume-reader")

	createLocalVolume(ctx, t, c, cs, ns, localPVName, NodeName)
	writer := writerPod(ns)
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, writer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := waitForPod(ctx, t, cs, ns, "app=writer")
	if len(w.Status.InitContainerStatuses) != 1 || w.Status.InitContainerStatuses[0].State.Terminated == nil ||
		w.Status.InitContainerStatuses[0].State.Terminated.ExitCode != 0 {
		t.Fatalf("init container did not complete: %+v", w.Status.InitContainerStatuses)
	}

	// On the host, where the agent will look.
	volDir := filepath.Join(c.KubeletRoot, "pods", string(w.UID), "volumes", "kubernetes.io~empty-dir", "data")
	got, err := os.ReadFile(filepath.Join(volDir, "hello.txt"))
	if err != nil || string(got) != "hello from writer\n" {
		t.Fatalf("host view of the emptyDir: %q, %v", got, err)
	}
	// Through the DaemonSet pod's hostPath mount, with kubectl exec (API server to
	// kubelet at the node's InternalIP).
	inReader := "/host/pods/" + string(w.UID) + "/volumes/kubernetes.io~empty-dir/data"
	out := kubectl(ctx, t, c, "exec", "-n", ns, reader.Name, "--", "cat", inReader+"/hello.txt", inReader+"/init.txt")
	if out != "hello from writer\nhello from init\n" {
		t.Fatalf("DaemonSet pod read %q from the emptyDir", out)
	}
	// The local PV is a bind mount made after the reader started, named after the PV.
	out = kubectl(ctx, t, c, "exec", "-n", ns, reader.Name, "--", "cat", "/host/pods/"+string(w.UID)+"/volumes/kubernetes.io~local-volume/"+localPVName+"/claim.txt")
	if out != "hello from writer\n" {
		t.Fatalf("DaemonSet pod read %q from the local PV", out)
	}
	// The writer's service-account token is a tmpfs mounted after the reader
	// started; seeing its content proves HostToContainer propagation.
	out = kubectl(ctx, t, c, "exec", "-n", ns, reader.Name, "--", "sh", "-c",
		"cat /host/pods/"+string(w.UID)+"/volumes/kubernetes.io~projected/kube-api-access-*/namespace")
	if out != ns {
		t.Fatalf("DaemonSet pod did not see the writer's projected volume mount: %q", out)
	}
	if logs := kubectl(ctx, t, c, "logs", "-n", ns, "writer", "-c", "app"); logs != "written\n" {
		t.Fatalf("kubectl logs of the writer: %q", logs)
	}
	assertInClusterAPIAccess(ctx, t, c, w)
	assertServiceTraffic(ctx, t, c, cs, ns, reader.Name)

	// containerd dies, as in a crash: Down must still find and stop the containers
	// (their shims outlive containerd) and undo their mounts and network namespaces.
	recs, _ := c.records()
	for _, r := range recs {
		if r.Name == "containerd" {
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
		}
	}
	start = time.Now()
	if err := c.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	downDone = true
	t.Logf("down took %s", time.Since(start).Round(time.Millisecond))
	assertNothingLeft(t, c)
	if _, err := os.Stat(volDir); err == nil {
		t.Errorf("the emptyDir %s survived teardown", volDir)
	}
	// Twice is fine.
	if err := c.Down(ctx); err != nil {
		t.Fatalf("second down: %v", err)
	}
	assertNothingLeft(t, c)
}

// TestDownAfterPartialUp tears down a cluster whose `up` stopped half way (the
// control plane, the pod network and containerd run; no kubelet), as after a failure.
func TestDownAfterPartialUp(t *testing.T) {
	c := testCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() { dumpLogs(t, c) })
	for _, d := range []string{"logs", "pids", "etcd", "containerd", "cni/net.d", "cni/ipam", "pod-logs", "images", "config"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	steps := []func(context.Context) error{
		func(context.Context) error { return c.saveHostSettings() },
		func(context.Context) error { return c.writePKI() },
		func(context.Context) error { return c.writeConfigs() },
		c.startEtcd, c.startAPIServer, c.setUpNetwork,
		func(ctx context.Context) error { return c.startContainerd(ctx, c.nodeAt(0)) },
	}
	for i, s := range steps {
		if err := s(ctx); err != nil {
			_ = c.Down(ctx)
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if st := c.Status(ctx); st.Ready || len(st.Components) != 3 {
		t.Fatalf("status of a partial cluster: %+v", st)
	}
	if err := c.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	assertNothingLeft(t, c)
	if err := c.Down(ctx); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

func waitForServiceAccount(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("default ServiceAccount in %s: %v", ns, err)
	}
}

// waitForPod waits until the one pod matching selector is Ready and returns it.
func waitForPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	var why string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) != 1 {
			why = fmt.Sprintf("pods: %v (err %v)", len(pods.Items), err)
			return false, nil
		}
		pod = &pods.Items[0]
		why = fmt.Sprintf("phase %s, conditions %+v, containers %+v", pod.Status.Phase, pod.Status.Conditions, pod.Status.ContainerStatuses)
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod %s in %s not Ready: %v; %s", selector, ns, err, why)
	}
	return pod
}

func kubectl(ctx context.Context, t *testing.T, c *Cluster, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, c.tool("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// readerDaemonSet reads the kubelet's pods directory as the Holdfast agent does.
func readerDaemonSet(ns string) *appsv1.DaemonSet {
	labels := map[string]string{"app": "volume-reader"}
	toContainer := corev1.MountPropagationHostToContainer
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "volume-reader", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name:            "reader",
						Image:           images.Busybox,
						ImagePullPolicy: corev1.PullNever,
						Command:         []string{"sleep", "3600"},
						VolumeMounts:    []corev1.VolumeMount{{Name: "pods", MountPath: "/host/pods", ReadOnly: true, MountPropagation: &toContainer}},
					}},
					Volumes: []corev1.Volume{{Name: "pods", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/kubelet/pods"},
					}}},
				},
			},
		},
	}
}

// assertInClusterAPIAccess does what an in-cluster client (the Holdfast manager) does,
// from inside the pod's network namespace: it connects to the `kubernetes` Service's
// cluster IP, verifies the serving certificate against the pod's ca.crt for the name
// kubernetes.default.svc, and authenticates with the pod's service-account token. (The
// busybox image has no TLS client that can talk to the API server.)
func assertInClusterAPIAccess(ctx context.Context, t *testing.T, c *Cluster, pod *corev1.Pod) {
	t.Helper()
	cid := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	pid := containerPID(t, cid)
	// The token as the container sees it: on a node after the first, the volume is
	// mounted only in that node's mount namespace, not on the host.
	tokenDir := fmt.Sprintf("/proc/%d/root/var/run/secrets/kubernetes.io/serviceaccount", pid)
	token, err1 := os.ReadFile(filepath.Join(tokenDir, "token"))
	caPEM, err2 := os.ReadFile(filepath.Join(tokenDir, "ca.crt"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc"},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetns(ctx, fmt.Sprintf("/proc/%d/ns/net", pid), network, addr)
		},
	}}
	url := fmt.Sprintf("https://%s:443/api/v1/namespaces/%s/serviceaccounts/default", APIServiceIP, pod.Namespace)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("in-cluster request from the pod's network namespace: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// The default ServiceAccount may not read ServiceAccounts: 403 proves that the
	// API server authenticated the pod's token; anything else is a failure.
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "system:serviceaccount:"+pod.Namespace+":default") {
		t.Fatalf("in-cluster request: %s %s", resp.Status, body)
	}
}

// assertServiceTraffic checks the two paths webhooks and MinIO-as-a-pod rely on:
// pod to pod through a Service's cluster IP (kube-proxy), and the API server to a
// pod IP on the bridge (its service proxy dials endpoints as it dials webhooks with
// --enable-aggregator-routing).
func assertServiceTraffic(ctx context.Context, t *testing.T, c *Cluster, cs kubernetes.Interface, ns, fromPod string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "writer", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "writer"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + svc.Spec.ClusterIP + "/hello.txt"
	var out []byte
	// kube-proxy programs the Service once it sees the EndpointSlice; poll the
	// outcome rather than guess how long that takes.
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		// (busybox 1.35's wget crashes with -T, so the attempt's context bounds it.)
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, err = exec.CommandContext(attempt, c.tool("kubectl"), "--kubeconfig", c.Kubeconfig(), "exec", "-n", ns, fromPod, "--",
			"wget", "-q", "-O-", url).CombinedOutput()
		return err == nil, nil
	})
	if err != nil || string(out) != "hello from writer\n" {
		t.Fatalf("pod to Service %s: %v: %s", url, err, out)
	}
	if got := kubectl(ctx, t, c, "get", "--raw", "/api/v1/namespaces/"+ns+"/services/writer:http/proxy/hello.txt"); got != "hello from writer\n" {
		t.Fatalf("API server to pod through the service proxy: %q", got)
	}
}

// containerPID finds the process of a container by its ID in its cgroup path.
func containerPID(t *testing.T, cid string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup"); strings.Contains(string(cg), cid) {
			return pid
		}
	}
	t.Fatalf("no process of container %s", cid)
	return 0
}

// dialInNetns connects from the network namespace nsPath. The dialing goroutine's
// thread enters the namespace and is never returned to the runtime (it exits with the
// goroutine), so no other goroutine can run in the wrong namespace.
func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread dies with this goroutine
		ns, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

const localPVName = "cluster-test-local"

// createLocalVolume makes the local PV name on node (a directory under the state
// directory, which every node's mount namespace sees) with a WaitForFirstConsumer
// StorageClass of the same name, as the e2e stories use, and the claim "claim" that
// the writer pods mount.
func createLocalVolume(ctx context.Context, t *testing.T, c *Cluster, cs kubernetes.Interface, ns, name, node string) {
	t.Helper()
	dir := c.path("local-volumes", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: &wffc,
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:       sc.Name,
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc.Name,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writerPod writes into an emptyDir from an init container and from its app
// container, which also writes into a local-PV claim.
func writerPod(ns string) *corev1.Pod {
	mount := []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	appMounts := append(mount, corev1.VolumeMount{Name: "claim", MountPath: "/claim"})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "writer", Namespace: ns, Labels: map[string]string{"app": "writer"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			InitContainers: []corev1.Container{{
				Name: "init", Image: images.Busybox, ImagePullPolicy: corev1.PullNever, VolumeMounts: mount,
				Command: []string{"sh", "-c", "echo 'hello from init' > /data/init.txt"},
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: images.Busybox, ImagePullPolicy: corev1.PullNever, VolumeMounts: appMounts,
				// It then serves the emptyDir over HTTP, for the Service checks.
				Command: []string{"sh", "-c", "echo 'hello from writer' | tee /claim/claim.txt > /data/hello.txt && echo written && exec httpd -f -p 8080 -h /data"},
				Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				// The kubelet probes from the host to the pod IP on the bridge.
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/hello.txt", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}},
			},
		},
	}
}
