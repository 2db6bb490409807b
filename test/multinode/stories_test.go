package multinode

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/cluster"
	"github.com/holdfast-dev/holdfast/test/e2e"
)

//go:embed manifests/*.yaml
var manifests embed.FS

// The agent's namespace and pod labels (config/agent).
const (
	systemNamespace = "holdfast-system"
	agentSelector   = "app.kubernetes.io/name=holdfast,app.kubernetes.io/component=agent"
)

// TestStories tells the two-node stories in order on one cluster; each builds on the
// state the previous one left, so the first failure stops the rest.
func TestStories(t *testing.T) {
	e := requireEnv(t)
	t.Cleanup(func() {
		if err := suite.TearDown(); err != nil {
			t.Error(err)
		}
	})
	nodes := e.Cluster.NodeList()
	if len(nodes) != 2 {
		t.Fatalf("the cluster runs %d nodes, want 2", len(nodes))
	}
	s := &stories{e: e, node1: nodes[0], node2: nodes[1]}
	for _, st := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"EachAgentBacksUpItsOwnNode", s.eachAgentBacksUpItsOwnNode},
		{"AgentTokenCannotWriteTheOtherNodesWork", s.agentTokenCannotWriteTheOtherNodesWork},
		{"LocalPVClaimBackedUpAndRestoredOnItsNode", s.localPVClaimBackedUpAndRestoredOnItsNode},
		{"RestoreLandsOnTheOtherNode", s.restoreLandsOnTheOtherNode},
		{"EmptyDirMovesToTheOtherNodeStaysIncremental", s.emptyDirMovesToTheOtherNodeStaysIncremental},
		{"AgentGoneOtherNodeGoesOnThenComesBack", s.agentGoneOtherNodeGoesOnThenComesBack},
	} {
		if !t.Run(st.name, st.fn) {
			t.Log(s.e.Diagnose(context.Background()))
			t.Fatalf("story %s failed; the later stories depend on it", st.name)
		}
	}
}

type stories struct {
	e            *e2e.Env
	node1, node2 cluster.Node
	// bothNodes is the first run of the policy both-nodes: a backup on each node.
	bothNodes *e2e.Run
}

// manifest returns the embedded manifest name with the nodes' names filled in, and
// the pairs of placeholder and value in repl.
func (s *stories) manifest(name string, repl ...string) string {
	b, err := manifests.ReadFile("manifests/" + name)
	if err != nil {
		panic(err)
	}
	repl = append(repl, "NODE_1", s.node1.Name, "NODE_2", s.node2.Name)
	return strings.NewReplacer(repl...).Replace(string(b))
}

// apply applies an embedded manifest with server-side apply.
func (s *stories) apply(ctx context.Context, name string, repl ...string) error {
	_, err := s.e.Kubectl(ctx, s.manifest(name, repl...), "apply", "--server-side", "-f", "-")
	return err
}

// agentOn returns the running, ready agent pod on node.
func (s *stories) agentOn(ctx context.Context, node string) (*corev1.Pod, error) {
	var found *corev1.Pod
	var why string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := s.e.Client.List(ctx, pods, client.InNamespace(systemNamespace), client.MatchingLabels{
			"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}); err != nil {
			why = err.Error()
			return false, nil
		}
		why = fmt.Sprintf("no ready agent pod on %s among %d", node, len(pods.Items))
		for i, p := range pods.Items {
			if p.Spec.NodeName != node || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					found = &pods.Items[i]
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the agent pod of %s: %w (%s)", node, err, why)
	}
	return found, nil
}

// doneByAgentOf fails the test unless the agent pod of node, and not another one,
// ran the work obj (a PodVolumeBackup or PodVolumeRestore) to its final phase: the
// event of that phase (reason) was reported by that agent pod (the events API's
// reportingInstance is the reporting controller and the pod's host name), and that
// pod's log, not the other agent's, says it finished it (done is the log message).
func (s *stories) doneByAgentOf(t *testing.T, node string, obj client.Object, reason, done string) {
	t.Helper()
	ctx := t.Context()
	agent, err := s.agentOn(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	want := "holdfast-agent-" + agent.Name
	var reporters []string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		events := &eventsv1.EventList{}
		if err := s.e.Client.List(ctx, events, client.InNamespace(obj.GetNamespace())); err != nil {
			return false, nil
		}
		reporters = nil
		for _, ev := range events.Items {
			if ev.Regarding.UID == obj.GetUID() && ev.Reason == reason {
				reporters = append(reporters, ev.ReportingInstance)
			}
		}
		return len(reporters) > 0, nil
	})
	if err != nil || len(reporters) != 1 || reporters[0] != want {
		t.Errorf("%s/%s: the %s event was reported by %v, want once by %s (the agent pod on %s)", obj.GetNamespace(), obj.GetName(), reason, reporters, want, node)
	}
	var others []corev1.Pod
	pods := &corev1.PodList{}
	if err := s.e.Client.List(ctx, pods, client.InNamespace(systemNamespace), client.MatchingLabels{
		"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Name != agent.Name {
			others = append(others, p)
		}
	}
	finished := func(log string) bool {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, done) && strings.Contains(l, obj.GetName()) {
				return true
			}
		}
		return false
	}
	var log string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		log, err = s.e.Kubectl(ctx, "", "-n", systemNamespace, "logs", agent.Name)
		return err == nil && finished(log), nil
	})
	if err != nil {
		t.Errorf("the log of %s (the agent on %s) does not say %q for %s: %v\n%s", agent.Name, node, done, obj.GetName(), err, log)
	}
	for _, p := range others {
		other, err := s.e.Kubectl(ctx, "", "-n", systemNamespace, "logs", p.Name)
		if err != nil {
			t.Errorf("the log of %s: %v", p.Name, err)
		} else if finished(other) {
			t.Errorf("%s, the agent on %s, says %q for %s of node %s", p.Name, p.Spec.NodeName, done, obj.GetName(), node)
		}
	}
	if !t.Failed() {
		s.e.Log("  %s/%s: %s reported by %s, %q in the log of %s on %s and in no other agent's", obj.GetNamespace(), obj.GetName(), reason, want, done, agent.Name, node)
	}
}

// podNode returns the node the pod ns/name runs on.
func (s *stories) podNode(ctx context.Context, ns, name string) (string, error) {
	pod := &corev1.Pod{}
	if err := s.e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
		return "", err
	}
	return pod.Spec.NodeName, nil
}

// deployBothNodes applies the pods on-1 and on-2 and their policy both-nodes
// (manifests/both-nodes.yaml), or finds them applied, and waits for the pods.
func (s *stories) deployBothNodes(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	if err := s.apply(ctx, "both-nodes.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{"on-1", "on-2"} {
		if _, err := s.e.Kubectl(ctx, "", "-n", "both-nodes", "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=3m"); err != nil {
			t.Fatal(err)
		}
	}
}

// 1. One policy run backs up a volume on each node: each PodVolumeBackup names its
// pod's node, and the agent of that node, not the other, did it.
func (s *stories) eachAgentBacksUpItsOwnNode(t *testing.T) {
	ctx := t.Context()
	s.deployBothNodes(t)
	run, err := s.e.RunPolicyNamed(ctx, "both-nodes", "one")
	if err != nil {
		t.Fatal(err)
	}
	s.bothNodes = run
	if len(run.Backups) != 2 {
		t.Fatalf("%d PodVolumeBackups, want one per pod (2)", len(run.Backups))
	}
	want := map[string]string{"on-1": s.node1.Name, "on-2": s.node2.Name}
	for i := range run.Backups {
		b := &run.Backups[i]
		node, err := s.podNode(ctx, b.Namespace, b.Spec.Pod.Name)
		if err != nil {
			t.Fatal(err)
		}
		if node != want[b.Spec.Pod.Name] {
			t.Fatalf("pod %s runs on %s, want %s", b.Spec.Pod.Name, node, want[b.Spec.Pod.Name])
		}
		if b.Spec.Node != node {
			t.Errorf("%s: spec.node %s, but its pod %s runs on %s", b.Name, b.Spec.Node, b.Spec.Pod.Name, node)
		}
		if b.Status.Phase != backupv1alpha1.RunCompleted || b.Status.SnapshotID == "" {
			t.Errorf("%s: phase %s, snapshot %q: %s", b.Name, b.Status.Phase, b.Status.SnapshotID, b.Status.Message)
		}
		s.doneByAgentOf(t, node, b, "BackupCompleted", "backup finished")
	}
	if lr := run.Policy.Status.LastRun; lr.VolumesTotal != 2 || lr.VolumesCompleted != 2 {
		t.Errorf("last run: %+v", lr)
	}
	if t.Failed() {
		return
	}
	if _, err := s.e.Kubectl(ctx, "", "get", "pvb", "-n", "both-nodes", "-o", "wide"); err != nil {
		t.Error(err)
	}
}

// agentToken reads the API token of the agent pod on node as that pod has it: the
// kubelet's projected service account token in the pod's kube-api-access volume,
// which is a tmpfs inside the node's mount namespace (cluster.NodePath).
func (s *stories) agentToken(ctx context.Context, node cluster.Node) (string, error) {
	agent, err := s.agentOn(ctx, node.Name)
	if err != nil {
		return "", err
	}
	dir, err := s.e.Cluster.NodePath(node, filepath.Join(s.e.Cluster.KubeletRoot, "pods", string(agent.UID), "volumes", "kubernetes.io~projected"))
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, d := range entries {
		if strings.HasPrefix(d.Name(), "kube-api-access-") {
			b, err := os.ReadFile(filepath.Join(dir, d.Name(), "token"))
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", fmt.Errorf("no kube-api-access volume in %s", dir)
}

// tokenNode returns the node name a bound service account token carries.
func tokenNode(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("not a JWT: %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims struct {
		Kubernetes struct {
			Node struct {
				Name string `json:"name"`
			} `json:"node"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", err
	}
	if claims.Kubernetes.ServiceAccount.Name != "holdfast-agent" {
		return "", fmt.Errorf("the token is service account %q's, not holdfast-agent's", claims.Kubernetes.ServiceAccount.Name)
	}
	return claims.Kubernetes.Node.Name, nil
}

// asToken returns a client that authenticates with token only.
func (s *stories) asToken(token string) (client.Client, error) {
	admin, err := clientcmd.BuildConfigFromFlags("", s.e.Cluster.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = token
	return client.New(cfg, client.Options{Scheme: s.e.Client.Scheme()})
}

// 2. The agent of node 1, with the token its pod has, may write the status of node 1's
// backup but not of node 2's: the ValidatingAdmissionPolicy holdfast-work-objects
// refuses it with a message naming both nodes, and the backup stays as it was.
func (s *stories) agentTokenCannotWriteTheOtherNodesWork(t *testing.T) {
	ctx := t.Context()
	if s.bothNodes == nil {
		t.Fatal("needs the backups of EachAgentBacksUpItsOwnNode: run the two together (-run 'TestStories/(EachAgent|AgentToken)')")
	}
	var own, other *backupv1alpha1.PodVolumeBackup
	for i := range s.bothNodes.Backups {
		switch b := &s.bothNodes.Backups[i]; b.Spec.Node {
		case s.node1.Name:
			own = b
		case s.node2.Name:
			other = b
		}
	}
	if own == nil || other == nil {
		t.Fatalf("want a backup of each node: %+v", s.bothNodes.Backups)
	}
	token, err := s.agentToken(ctx, s.node1)
	if err != nil {
		t.Fatal(err)
	}
	if node, err := tokenNode(token); err != nil || node != s.node1.Name {
		t.Fatalf("the agent's token names node %q (%v), want %s", node, err, s.node1.Name)
	}
	agent, err := s.asToken(token)
	if err != nil {
		t.Fatal(err)
	}
	// The same harmless patch for both: it sets the phase the backup has.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Completed"}}`))

	before := &backupv1alpha1.PodVolumeBackup{}
	if err := s.e.Client.Get(ctx, client.ObjectKeyFromObject(other), before); err != nil {
		t.Fatal(err)
	}
	refused := agent.Status().Patch(ctx, before.DeepCopy(), patch)
	if !apierrors.IsForbidden(refused) {
		t.Fatalf("node 1's agent patched the status of node 2's backup %s: %v; want Forbidden", other.Name, refused)
	}
	wantMsg := fmt.Sprintf("only the Holdfast manager, or the agent of node %s, writes the status of podvolumebackups: system:serviceaccount:%s:holdfast-agent on node %s may not",
		s.node2.Name, systemNamespace, s.node1.Name)
	if !strings.Contains(refused.Error(), wantMsg) || !strings.Contains(refused.Error(), "holdfast-work-objects") {
		t.Errorf("refused with %q; want the admission policy holdfast-work-objects saying %q", refused, wantMsg)
	}
	after := &backupv1alpha1.PodVolumeBackup{}
	if err := s.e.Client.Get(ctx, client.ObjectKeyFromObject(other), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion || after.Status.Phase != backupv1alpha1.RunCompleted {
		t.Errorf("%s changed: resourceVersion %s -> %s, phase %s", other.Name, before.ResourceVersion, after.ResourceVersion, after.Status.Phase)
	}

	// The positive control: the same token and patch on node 1's own backup pass the
	// policy (and RBAC), so the refusal above is the node's doing.
	mine := &backupv1alpha1.PodVolumeBackup{}
	if err := s.e.Client.Get(ctx, client.ObjectKeyFromObject(own), mine); err != nil {
		t.Fatal(err)
	}
	if err := agent.Status().Patch(ctx, mine.DeepCopy(), patch); err != nil {
		t.Errorf("node 1's agent may not patch the status of its own node's backup %s: %v", own.Name, err)
	}
	s.e.Show("node 1's agent token writing the status of node 2's backup:", refused.Error())
}

// restoreOf returns the one PodVolumeRestore of the VolumeRestore ns/name.
func (s *stories) restoreOf(ctx context.Context, ns, name string) (*backupv1alpha1.PodVolumeRestore, error) {
	list := &backupv1alpha1.PodVolumeRestoreList{}
	if err := s.e.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var found []backupv1alpha1.PodVolumeRestore
	for _, r := range list.Items {
		if r.Spec.VolumeRestore == name {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d PodVolumeRestores of %s/%s, want 1", len(found), ns, name)
	}
	return &found[0], nil
}

// restoredPod fails the test unless pod was held by restore-wait, which exited 0,
// and its app started on the restored data (its log says "found existing data").
func (s *stories) restoredPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	inits := pod.Spec.InitContainers
	if len(inits) == 0 || inits[0].Name != restorewait.ContainerName {
		t.Errorf("pod %s's init containers are %v, want %s first", pod.Name, inits, restorewait.ContainerName)
	}
	if st := pod.Status.InitContainerStatuses; len(st) == 0 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
		t.Errorf("restore-wait of pod %s did not exit 0: %+v", pod.Name, st)
	}
	log, err := s.e.Kubectl(t.Context(), "", "-n", pod.Namespace, "logs", pod.Name, "-c", "app")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "found existing data") {
		t.Errorf("pod %s did not start on restored data; its log:\n%s", pod.Name, log)
	}
}

// 3. A claim on a local PV of node 2 is backed up by node 2's agent, and restored by
// it into a new pod, which the PV's node affinity puts on node 2.
func (s *stories) localPVClaimBackedUpAndRestoredOnItsNode(t *testing.T) {
	ctx := t.Context()
	const ns = "local-pv"
	// The PV's directory is on node 2's "disk": beside its kubelet root, under the
	// cluster's state directory, so that teardown removes it.
	pvPath := filepath.Join(filepath.Dir(s.node2.KubeletRoot), "local-volumes", "ledger")
	if err := os.MkdirAll(pvPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "local-pv.yaml", "PV_PATH", pvPath); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "local-pv-pod.yaml", "POD_NAME", "writer"); err != nil {
		t.Fatal(err)
	}
	writer, err := s.e.PodIn(ctx, ns, map[string]string{"app": "ledger"}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if writer.Spec.NodeName != s.node2.Name {
		t.Fatalf("pod %s on the local PV of %s runs on %s", writer.Name, s.node2.Name, writer.Spec.NodeName)
	}
	sums, err := s.e.ChecksumsIn(ctx, ns, "pod/writer", "/ledger")
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicyNamed(ctx, "local-pv", "ledger-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 1 {
		t.Fatalf("%d PodVolumeBackups, want 1", len(run.Backups))
	}
	b := &run.Backups[0]
	if b.Spec.Node != s.node2.Name || b.Spec.ClaimName != "ledger" || b.Status.Phase != backupv1alpha1.RunCompleted {
		t.Fatalf("%s: node %s, claim %s, phase %s %s; want the claim ledger backed up on %s", b.Name, b.Spec.Node, b.Spec.ClaimName, b.Status.Phase, b.Status.Message, s.node2.Name)
	}
	s.doneByAgentOf(t, s.node2.Name, b, "BackupCompleted", "backup finished")

	// The data is lost: the pod goes and the files in the PV's directory with it.
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "delete", "pod", "writer", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	dir, err := s.e.Cluster.NodePath(s.node2, pvPath)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		if err := os.RemoveAll(filepath.Join(dir, d.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.apply(ctx, "local-pv-restore.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "local-pv-pod.yaml", "POD_NAME", "reader"); err != nil {
		t.Fatal(err)
	}
	vr, err := s.e.WaitRestoreIn(ctx, ns, "ledger-from-latest")
	if err != nil {
		t.Fatal(err)
	}
	if vr.Status.VolumesCompleted != 1 || vr.Status.VolumesFailed != 0 {
		t.Errorf("VolumeRestore status: %+v", vr.Status)
	}
	reader, err := s.e.PodIn(ctx, ns, map[string]string{"app": "ledger"}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if reader.Name != "reader" || reader.Spec.NodeName != s.node2.Name {
		t.Fatalf("pod %s on %s; want reader on %s", reader.Name, reader.Spec.NodeName, s.node2.Name)
	}
	pvr, err := s.restoreOf(ctx, ns, "ledger-from-latest")
	if err != nil {
		t.Fatal(err)
	}
	if pvr.Spec.Node != s.node2.Name || pvr.Spec.Pod.Name != "reader" || pvr.Status.Phase != backupv1alpha1.RunCompleted {
		t.Errorf("%s: node %s, pod %s, phase %s %s; want reader restored on %s", pvr.Name, pvr.Spec.Node, pvr.Spec.Pod.Name, pvr.Status.Phase, pvr.Status.Message, s.node2.Name)
	}
	s.doneByAgentOf(t, s.node2.Name, pvr, "RestoreCompleted", "restore finished")
	s.restoredPod(t, reader)
	got, err := s.e.ChecksumsIn(ctx, ns, "pod/reader", "/ledger")
	if err != nil {
		t.Fatal(err)
	}
	if got != sums {
		t.Errorf("restored data differs:\n got %s\nwant %s", got, sums)
	}
}

// 4. A bare pod's volume backed up on node 1 is restored into its successor, which
// can only run on node 2: restore-wait holds it there until node 2's agent restored it.
func (s *stories) restoreLandsOnTheOtherNode(t *testing.T) {
	ctx := t.Context()
	const ns = "cross"
	if err := s.apply(ctx, "cross.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "cross-pod.yaml", "POD_NODE", s.node1.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.PodIn(ctx, ns, map[string]string{"app": "cross"}, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	sums, err := s.e.ChecksumsIn(ctx, ns, "pod/app", "/data")
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicyNamed(ctx, "cross", "cross-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 1 || run.Backups[0].Spec.Node != s.node1.Name {
		t.Fatalf("want one backup on %s: %+v", s.node1.Name, run.Backups)
	}
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "delete", "pod", "app", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "cross-restore.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(ctx, "cross-pod.yaml", "POD_NODE", s.node2.Name); err != nil {
		t.Fatal(err)
	}
	vr, err := s.e.WaitRestoreIn(ctx, ns, "app-from-latest")
	if err != nil {
		t.Fatal(err)
	}
	if vr.Status.VolumesCompleted != 1 || vr.Status.VolumesFailed != 0 {
		t.Errorf("VolumeRestore status: %+v", vr.Status)
	}
	pod, err := s.e.PodIn(ctx, ns, map[string]string{"app": "cross"}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != s.node2.Name {
		t.Fatalf("the restored pod runs on %s, want %s", pod.Spec.NodeName, s.node2.Name)
	}
	pvr, err := s.restoreOf(ctx, ns, "app-from-latest")
	if err != nil {
		t.Fatal(err)
	}
	if pvr.Spec.Node != s.node2.Name || pvr.Spec.Pod.UID != string(pod.UID) || pvr.Status.Phase != backupv1alpha1.RunCompleted {
		t.Errorf("%s: node %s, pod %s, phase %s %s; want the new pod restored on %s", pvr.Name, pvr.Spec.Node, pvr.Spec.Pod.Name, pvr.Status.Phase, pvr.Status.Message, s.node2.Name)
	}
	s.doneByAgentOf(t, s.node2.Name, pvr, "RestoreCompleted", "restore finished")
	s.restoredPod(t, pod)
	got, err := s.e.ChecksumsIn(ctx, ns, "pod/app", "/data")
	if err != nil {
		t.Fatal(err)
	}
	if got != sums {
		t.Errorf("restored data differs:\n got %s\nwant %s", got, sums)
	}

	// The agent of node 1, which made the backup, cannot write the status of the
	// restore on node 2 either.
	token, err := s.agentToken(ctx, s.node1)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := s.asToken(token)
	if err != nil {
		t.Fatal(err)
	}
	refused := agent.Status().Patch(ctx, pvr.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Completed"}}`)))
	wantMsg := fmt.Sprintf("only the Holdfast manager, or the agent of node %s, writes the status of podvolumerestores: system:serviceaccount:%s:holdfast-agent on node %s may not",
		s.node2.Name, systemNamespace, s.node1.Name)
	if !apierrors.IsForbidden(refused) || !strings.Contains(refused.Error(), wantMsg) {
		t.Errorf("node 1's agent patching the status of node 2's restore %s: %v; want Forbidden: %s", pvr.Name, refused, wantMsg)
	}
}

// 5. A Deployment's pod with an emptyDir moves from node 1 to node 2 (its node
// selector changes): the backup on node 2 continues the source identity of the one on
// node 1, with its snapshot as parent, and uploads little, since the new pod wrote the
// same rows and only a new id.
func (s *stories) emptyDirMovesToTheOtherNodeStaysIncremental(t *testing.T) {
	ctx := t.Context()
	const ns = "moving"
	if err := s.apply(ctx, "moving.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "rollout", "status", "deployment/mover", "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	first, err := s.e.RunPolicyNamed(ctx, "moving", "move-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Backups) != 1 || first.Backups[0].Spec.Node != s.node1.Name {
		t.Fatalf("want one backup on %s: %+v", s.node1.Name, first.Backups)
	}
	b1 := first.Backups[0]
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":%q}}}}}`, s.node2.Name)
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "patch", "deployment", "mover", "--type=merge", "-p", patch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "rollout", "status", "deployment/mover", "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	// The node 1 pod is gone before the run, so that only the moved one is selected.
	if _, err := s.e.Kubectl(ctx, "", "-n", ns, "wait", "--for=delete", "pod/"+b1.Spec.Pod.Name, "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	pod, err := s.e.PodIn(ctx, ns, map[string]string{"app": "mover"}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != s.node2.Name || pod.Name == b1.Spec.Pod.Name {
		t.Fatalf("pod %s runs on %s; want a new pod on %s", pod.Name, pod.Spec.NodeName, s.node2.Name)
	}
	second, err := s.e.RunPolicyNamed(ctx, "moving", "move-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Backups) != 1 {
		t.Fatalf("%d backups, want 1", len(second.Backups))
	}
	b2 := &second.Backups[0]
	if b2.Spec.Node != s.node2.Name || b2.Spec.Pod.Name != pod.Name {
		t.Errorf("%s: node %s, pod %s; want pod %s on %s", b2.Name, b2.Spec.Node, b2.Spec.Pod.Name, pod.Name, s.node2.Name)
	}
	if b2.Spec.SourcePath != b1.Spec.SourcePath {
		t.Errorf("source identity %s on node 2, %s on node 1; want the same", b2.Spec.SourcePath, b1.Spec.SourcePath)
	}
	if b2.Status.Phase != backupv1alpha1.RunCompleted || b2.Status.ParentSnapshotID != b1.Status.SnapshotID {
		t.Errorf("%s: phase %s, parent snapshot %q; want Completed with parent %s (node 1's backup)", b2.Name, b2.Status.Phase, b2.Status.ParentSnapshotID, b1.Status.SnapshotID)
	}
	if b2.Status.BytesUploaded > b1.Status.BytesUploaded/4 {
		t.Errorf("%s uploaded %d bytes, node 1's backup %d; want at most a quarter", b2.Name, b2.Status.BytesUploaded, b1.Status.BytesUploaded)
	}
	s.doneByAgentOf(t, s.node2.Name, b2, "BackupCompleted", "backup finished")
}

// patchAgents patches the agent DaemonSet and waits until its rollout finished and
// agentOnNode2 says whether an agent pod exists on node 2.
func (s *stories) patchAgents(t *testing.T, kind, patch string, agentOnNode2 bool) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.e.Kubectl(ctx, "", "-n", systemNamespace, "patch", "daemonset", "holdfast-agent", "--type="+kind, "-p", patch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.Kubectl(ctx, "", "-n", systemNamespace, "rollout", "status", "daemonset/holdfast-agent", "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	var why string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := s.e.Client.List(ctx, pods, client.InNamespace(systemNamespace), client.MatchingLabels{
			"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}); err != nil {
			return false, nil
		}
		var on2 []string
		for _, p := range pods.Items {
			if p.Spec.NodeName == s.node2.Name {
				on2 = append(on2, p.Name+" "+string(p.Status.Phase))
			}
		}
		why = fmt.Sprintf("agent pods on %s: %v", s.node2.Name, on2)
		return (len(on2) > 0) == agentOnNode2, nil
	})
	if err != nil {
		t.Fatalf("%v (%s)", err, why)
	}
	for _, n := range []cluster.Node{s.node1, s.node2} {
		if n == s.node2 && !agentOnNode2 {
			continue
		}
		if _, err := s.agentOn(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// 6. Node 2's agent is gone (the DaemonSet no longer schedules there): a run backs up
// node 1's volume, the manager fails node 2's after --stranded-work-deadline with its
// sentence, and the run is PartiallyFailed; once the agent is back, the next run backs
// up both.
func (s *stories) agentGoneOtherNodeGoesOnThenComesBack(t *testing.T) {
	ctx := t.Context()
	s.deployBothNodes(t)
	s.e.Log("keeping the agent off %s: a required node affinity in the DaemonSet", s.node2.Name)
	s.patchAgents(t, "strategic", fmt.Sprintf(`{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"NotIn","values":[%q]}]}]}}}}}}}`, s.node2.Name), false)
	t.Cleanup(func() {
		// The later stories (if any) need both agents; harmless when removed already.
		_, _ = s.e.Kubectl(context.Background(), "", "-n", systemNamespace, "patch", "daemonset", "holdfast-agent", "--type=json", "-p", `[{"op":"remove","path":"/spec/template/spec/affinity"}]`)
	})
	previous, err := s.e.StartRun(ctx, "both-nodes", "agent-gone")
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.e.WaitRunEnded(ctx, "both-nodes", "agent-gone", previous)
	if err != nil {
		t.Fatal(err)
	}
	lr := run.Policy.Status.LastRun
	if lr.Outcome != backupv1alpha1.RunOutcomePartiallyFailed || lr.VolumesTotal != 2 || lr.VolumesCompleted != 1 || lr.VolumesFailed != 1 {
		t.Errorf("last run: %+v; want PartiallyFailed, 1 of 2 completed, 1 failed", lr)
	}
	if len(run.Backups) != 2 {
		t.Fatalf("%d backups, want 2", len(run.Backups))
	}
	wantMsg := fmt.Sprintf("no Holdfast agent pod runs on node %s, so volume data of pod on-2 could not be backed up: failed after %s without an agent (the manager's --stranded-work-deadline)", s.node2.Name, StrandedWorkDeadline)
	for i := range run.Backups {
		b := &run.Backups[i]
		switch b.Spec.Node {
		case s.node1.Name:
			if b.Status.Phase != backupv1alpha1.RunCompleted {
				t.Errorf("%s on %s: %s %s; want Completed", b.Name, b.Spec.Node, b.Status.Phase, b.Status.Message)
			}
			s.doneByAgentOf(t, s.node1.Name, b, "BackupCompleted", "backup finished")
		case s.node2.Name:
			if b.Status.Phase != backupv1alpha1.RunFailed || b.Status.Message != wantMsg {
				t.Errorf("%s on %s: %s %q; want Failed %q", b.Name, b.Spec.Node, b.Status.Phase, b.Status.Message, wantMsg)
			}
			s.failedByTheManager(t, b)
		default:
			t.Errorf("%s: spec.node %q", b.Name, b.Spec.Node)
		}
	}
	if t.Failed() {
		return
	}
	if _, err := s.e.Kubectl(ctx, "", "get", "pvb", "-n", "both-nodes", "-l", backupv1alpha1.LabelRun+"="+lr.Name); err != nil {
		t.Error(err)
	}

	s.e.Log("letting the agent back on %s", s.node2.Name)
	s.patchAgents(t, "json", `[{"op":"remove","path":"/spec/template/spec/affinity"}]`, true)
	back, err := s.e.RunPolicyNamed(ctx, "both-nodes", "agent-back")
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Backups) != 2 {
		t.Fatalf("%d backups, want 2", len(back.Backups))
	}
	for i := range back.Backups {
		b := &back.Backups[i]
		if b.Status.Phase != backupv1alpha1.RunCompleted {
			t.Errorf("%s on %s: %s %s", b.Name, b.Spec.Node, b.Status.Phase, b.Status.Message)
		}
		if b.Spec.Node == s.node2.Name {
			s.doneByAgentOf(t, s.node2.Name, b, "BackupCompleted", "backup finished")
		}
	}
}

// failedByTheManager fails the test unless the manager's stranded-work guard, not an
// agent, failed b: its Stalled condition has the reason NoAgent and the Warning event
// of that reason was reported by the guard.
func (s *stories) failedByTheManager(t *testing.T, b *backupv1alpha1.PodVolumeBackup) {
	t.Helper()
	stalled := false
	for _, c := range b.Status.Conditions {
		if c.Type == "Stalled" && c.Status == "True" && c.Reason == "NoAgent" {
			stalled = true
		}
	}
	if !stalled {
		t.Errorf("%s: conditions %+v; want Stalled, reason NoAgent", b.Name, b.Status.Conditions)
	}
	var by []string
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		events := &eventsv1.EventList{}
		if err := s.e.Client.List(ctx, events, client.InNamespace(b.Namespace)); err != nil {
			return false, nil
		}
		by = nil
		for _, ev := range events.Items {
			if ev.Regarding.UID == b.UID && ev.Reason == "NoAgent" && ev.Type == corev1.EventTypeWarning {
				by = append(by, ev.ReportingController)
			}
		}
		return len(by) > 0, nil
	})
	if err != nil || len(by) != 1 || by[0] != "holdfast-stranded-work" {
		t.Errorf("%s: NoAgent events reported by %v, want once by holdfast-stranded-work (the manager)", b.Name, by)
	}
}
