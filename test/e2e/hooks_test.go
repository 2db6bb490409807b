package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
)

// The hooks story's objects (manifests/hooks*.yaml).
const (
	hooksNamespace      = "kitchen"
	hooksPolicy         = "kitchen-hooks"
	hooksFailingPolicy  = "kitchen-failing"
	hooksContinuePolicy = "kitchen-continue"
	hooksRestore        = "orders-back"
)

// hooksQuiesceAndResume: the manager runs commands in the pods before and after their
// volumes are backed up. A pod with Velero's hook annotations (orders) gets its pre
// hook's marker into the snapshot, and its post hook removes it from the live volume;
// a policy hook runs in a native sidecar (ledger). A failing pre hook with onError
// Fail leaves its pod's volume Failed with reason HookFailed and the run not
// Succeeded, and its post hook still runs; one with Continue is recorded and the
// backup goes on. The marker comes back with the orders' restore into a new pod.
func (s *stories) hooksQuiesceAndResume(t *testing.T) {
	ctx := t.Context()
	e := s.e
	t.Cleanup(func() { s.removeHooks(t) })
	e.Log("deploying the namespace %s: a pod with Velero hook annotations, one with a native sidecar, one whose hook fails", hooksNamespace)
	for _, file := range []string{"hooks.yaml", "hooks-orders.yaml"} {
		if err := e.Apply(ctx, file); err != nil {
			t.Fatal(err)
		}
	}
	for _, app := range []string{"orders", "ledger", "broken", "flaky"} {
		if _, err := e.PodIn(ctx, hooksNamespace, map[string]string{"app": app}, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	// (a) and (b): Velero annotations and a policy hook in a native sidecar.
	run, err := e.RunPolicyNamed(ctx, hooksPolicy, "hooks-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 2 {
		t.Fatalf("%d backups, want those of orders and ledger", len(run.Backups))
	}
	for _, b := range run.Backups {
		want := map[string]string{
			"orders": "Pre/pre/app/Succeeded, Post/post/app/Succeeded",
			"ledger": "Pre/sidecar-flush/flusher/Succeeded, Post/sidecar-flush/flusher/Succeeded",
		}[b.Spec.Pod.Name]
		if got := hookOutcomes(&b); got != want {
			t.Errorf("%s: hook outcomes %q, want %q", b.Spec.Pod.Name, got, want)
		}
		for _, c := range []string{backupv1alpha1.ConditionPreHooks, backupv1alpha1.ConditionPostHooks} {
			if !apimeta.IsStatusConditionTrue(b.Status.Conditions, c) {
				t.Errorf("%s: %s = %+v, want True", b.Spec.Pod.Name, c, apimeta.FindStatusCondition(b.Status.Conditions, c))
			}
		}
		// The pre hook's marker was read with the volume.
		if b.Status.Progress.TotalFiles != 2 {
			t.Errorf("%s: %d files backed up, want 2 (the data and the pre hook's marker)", b.Spec.Pod.Name, b.Status.Progress.TotalFiles)
		}
	}
	if _, err := e.show(ctx, "What a backup with hooks shows:", "-n", hooksNamespace, "describe", "pvb", run.Backup("data").Name); err != nil {
		t.Error(err)
	}
	for pod, marker := range map[string]string{"orders": "/data/marker", "ledger": "/data/sidecar-marker"} {
		if out, err := e.Kubectl(ctx, "", "-n", hooksNamespace, "exec", pod, "--", "ls", "/data"); err != nil || strings.Contains(out, strings.TrimPrefix(marker, "/data/")) {
			t.Errorf("%s's live volume holds %q (%v): the post hook did not remove %s", pod, out, err, marker)
		}
	}

	// (c) A pre hook that fails with onError Fail.
	previous, err := e.StartRun(ctx, hooksFailingPolicy, "hooks-fail-1")
	if err != nil {
		t.Fatal(err)
	}
	failing, err := e.WaitRunEnded(ctx, hooksFailingPolicy, "hooks-fail-1", previous)
	if err != nil {
		t.Fatal(err)
	}
	r := failing.Policy.Status.LastRun
	if r.Outcome != backupv1alpha1.RunOutcomeFailed || r.HooksFailed != 1 || len(r.Failures) != 1 || r.Failures[0].Reason != policyctrl.ReasonHookFailed ||
		!strings.HasPrefix(r.Message, "1 hooks with onError Fail failed, first: pre hook freeze in container app of pod kitchen/broken: exit 1: cannot lock tables") {
		t.Errorf("run with a failed Fail hook: %+v", r)
	}
	if len(failing.Backups) != 1 {
		t.Fatalf("%d backups of broken", len(failing.Backups))
	}
	b := failing.Backups[0]
	stalled := apimeta.FindStatusCondition(b.Status.Conditions, backupv1alpha1.ConditionStalled)
	if want := "pre hook freeze in container app failed: exit 1: cannot lock tables; the volume was not backed up"; b.Status.Phase != backupv1alpha1.RunFailed ||
		b.Status.Message != want || b.Status.SnapshotID != "" || stalled == nil || stalled.Reason != backupv1alpha1.ReasonHookFailed {
		t.Errorf("broken's backup: %s %q, snapshot %q, Stalled %+v; want Failed HookFailed %q, no snapshot", b.Status.Phase, b.Status.Message, b.Status.SnapshotID, stalled, want)
	}
	if got, want := hookOutcomes(&b), "Pre/freeze/app/Failed, Post/freeze/app/Succeeded"; got != want {
		t.Errorf("broken's hook outcomes %q, want %q", got, want)
	}
	if _, err := e.Kubectl(ctx, "", "-n", hooksNamespace, "exec", "broken", "--", "test", "-e", "/data/post-ran"); err != nil {
		t.Errorf("the post hook did not run after the failed pre hook: %v", err)
	}
	if _, err := e.show(ctx, "A failed pre hook, in the backup's events:", "-n", hooksNamespace, "get", "events", "--field-selector", "involvedObject.name="+b.Name); err != nil {
		t.Error(err)
	}

	// A pre hook that fails with onError Continue.
	cont, err := e.RunPolicyNamed(ctx, hooksContinuePolicy, "hooks-continue-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cont.Backups) != 1 || cont.Backups[0].Status.Phase != backupv1alpha1.RunCompleted || cont.Policy.Status.LastRun.HooksFailed != 0 {
		t.Fatalf("run with a failed Continue hook: %+v", cont.Policy.Status.LastRun)
	}
	if h := cont.Backups[0].Status.Hooks; len(h) != 1 || h[0].Outcome != backupv1alpha1.HookFailed || h[0].Message != "exit 2" {
		t.Errorf("flaky's hook outcomes %+v, want the failed best-effort with exit 2", h)
	}

	// The marker is in the snapshot: restore the orders into a new pod.
	e.Log("losing the orders: deleting the pod and its emptyDir")
	if _, err := e.Kubectl(ctx, "", "-n", hooksNamespace, "delete", "pod", "orders", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ApplyRestoreFirst(ctx, hooksNamespace, "hooks-restore.yaml", hooksRestore); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, "hooks-orders.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitRestoreIn(ctx, hooksNamespace, hooksRestore); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PodIn(ctx, hooksNamespace, map[string]string{"app": "orders"}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"/data/marker": "quiesced\n", "/data/orders.txt": "order 1\n"} {
		if got, err := e.Kubectl(ctx, "", "-n", hooksNamespace, "exec", "orders", "--", "cat", file); err != nil || got != want {
			t.Errorf("%s in the restored pod: %q, %v; want %q", file, got, err, want)
		}
	}
}

// hookOutcomes is Stage/name/container/outcome of each of the backup's hook runs.
func hookOutcomes(b *backupv1alpha1.PodVolumeBackup) string {
	var out []string
	for _, h := range b.Status.Hooks {
		out = append(out, fmt.Sprintf("%s/%s/%s/%s", h.Stage, h.Name, h.Container, h.Outcome))
	}
	return strings.Join(out, ", ")
}

// removeHooks deletes what the story deployed.
func (s *stories) removeHooks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.e.DeleteNamespace(ctx, hooksNamespace); err != nil {
		t.Errorf("removing the story's namespace: %v", err)
	}
	if _, err := s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "vbp/"+hooksPolicy, "vbp/"+hooksFailingPolicy, "vbp/"+hooksContinuePolicy); err != nil {
		t.Errorf("removing the story's policies: %v", err)
	}
}
