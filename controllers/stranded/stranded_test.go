package stranded

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// createNode makes a Node with the kubernetes.io/os label the kubelet sets.
func createNode(t *testing.T, name, os string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: os}}}
	if err := env.Client.Create(ctxFor(t), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), n) })
}

// runAgentOn makes a running agent pod of the DaemonSet on node.
func runAgentOn(t *testing.T, node string) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "holdfast-agent-" + node, Namespace: operatorNamespace, Labels: DefaultAgentLabels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent", Image: "holdfast:test"}}},
	}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p, client.GracePeriodSeconds(0)) })
	p.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
}

func newBackup(t *testing.T, ns, name, node string, phase v1.RunPhase) *v1.PodVolumeBackup {
	t.Helper()
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: node, Pod: v1.PodReference{Name: "app-" + name, UID: "uid-" + name}, Volume: "data",
			SourcePath: "/pod/" + name + "/data", StorageLocation: "fs", Repository: "fs-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	if phase != "" {
		pvb.Status.Phase = phase
		if err := env.Client.Status().Update(ctxFor(t), pvb); err != nil {
			t.Fatal(err)
		}
	}
	return pvb
}

func newRestore(t *testing.T, ns, name, node string) *v1.PodVolumeRestore {
	t.Helper()
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodVolumeRestoreSpec{Node: node, Pod: v1.PodReference{Name: "app-" + name, UID: "uid-" + name}, Volume: "data",
			VolumeRestore: "vr", SnapshotID: "abc", SourceNamespace: ns, StorageLocation: "fs", Repository: "fs-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	return pvr
}

// waitFailed waits until obj is Failed with a Stalled condition of reason and returns
// its message.
func waitFailed(t *testing.T, obj client.Object, reason string) string {
	t.Helper()
	var msg string
	testenv.Eventually(t, fmt.Sprintf("%s Failed with %s", obj.GetName(), reason), func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var phase v1.RunPhase
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *v1.PodVolumeBackup:
			phase, conds, msg = o.Status.Phase, o.Status.Conditions, o.Status.Message
		case *v1.PodVolumeRestore:
			phase, conds, msg = o.Status.Phase, o.Status.Conditions, o.Status.Message
		}
		c := meta.FindStatusCondition(conds, v1.ConditionStalled)
		if phase != v1.RunFailed || c == nil || c.Reason != reason {
			return fmt.Errorf("phase %q, conditions %v", phase, conds)
		}
		return nil
	})
	return msg
}

// waitEvent waits for the event the manager writes on the failed object.
func waitEvent(t *testing.T, obj client.Object, reason string) {
	t.Helper()
	testenv.Eventually(t, "event "+reason+" on "+obj.GetName(), func() error {
		var list corev1.EventList
		if err := env.Client.List(ctxFor(t), &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Name == obj.GetName() && e.Reason == reason && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no %s event among %d", reason, len(list.Items))
	})
}

// TestWorkNoAgentWillDoIsFailedAfterTheDeadline is review M4: work whose node is gone,
// runs Windows or has no agent pod is failed by the manager with one sentence, while
// work on a Linux node with a running agent keeps waiting for that agent.
func TestWorkNoAgentWillDoIsFailedAfterTheDeadline(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createNode(t, "served", "linux")
	runAgentOn(t, "served")
	createNode(t, "windows", "windows")
	createNode(t, "agentless", "linux")

	waiting := newBackup(t, ns, "waiting", "served", "")
	claimedOnServed := newBackup(t, ns, "claimed-served", "served", v1.RunInProgress)
	created := time.Now()
	gone := newBackup(t, ns, "gone", "gone", "")
	claimedOnGone := newBackup(t, ns, "claimed-gone", "gone", v1.RunInProgress)
	onWindows := newBackup(t, ns, "on-windows", "windows", "")
	agentless := newBackup(t, ns, "agentless", "agentless", "")
	restoreOnGone := newRestore(t, ns, "restore-gone", "gone")

	msg := waitFailed(t, gone, ReasonNodeGone)
	if waited := time.Since(created); waited < testDeadline {
		t.Errorf("failed after %s, before the deadline of %s", waited, testDeadline)
	}
	for _, want := range []string{"node gone no longer exists", "volume data of pod app-gone", "backed up"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	if gone.Status.CompletionTime == nil {
		t.Errorf("no completionTime on the failed backup")
	}
	waitEvent(t, gone, ReasonNodeGone)
	waitFailed(t, claimedOnGone, ReasonNodeGone)
	if msg := waitFailed(t, onWindows, ReasonNodeNotLinux); !strings.Contains(msg, "runs windows") {
		t.Errorf("Windows node: message %q", msg)
	}
	if msg := waitFailed(t, agentless, ReasonNoAgent); !strings.Contains(msg, "no Holdfast agent pod runs on node agentless") {
		t.Errorf("node without an agent: message %q", msg)
	}
	if msg := waitFailed(t, restoreOnGone, ReasonNodeGone); !strings.Contains(msg, "could not be restored") {
		t.Errorf("restore: message %q", msg)
	}

	// The work on the served node was created first: its deadline passed too.
	for _, pvb := range []*v1.PodVolumeBackup{waiting, claimedOnServed} {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), pvb); err != nil {
			t.Fatal(err)
		}
		if pvb.Status.Phase == v1.RunFailed {
			t.Errorf("%s on a Linux node with a running agent was failed: %s", pvb.Name, pvb.Status.Message)
		}
	}
}

// TestAnAgentThatComesBackInTimeKeepsTheWork: an agent pod that appears on the node
// before the deadline ends the count.
func TestAnAgentThatComesBackInTimeKeepsTheWork(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createNode(t, "rolling", "linux")
	pvb := newBackup(t, ns, "rolling", "rolling", "")
	runAgentOn(t, "rolling")
	// A neighbour on a node with no agent, created after: once it is failed, the
	// first one's deadline has passed as well.
	createNode(t, "empty", "linux")
	other := newBackup(t, ns, "empty", "empty", "")
	waitFailed(t, other, ReasonNoAgent)
	if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), pvb); err != nil {
		t.Fatal(err)
	}
	if pvb.Status.Phase == v1.RunFailed {
		t.Errorf("work whose agent came back was failed: %s", pvb.Status.Message)
	}
}
