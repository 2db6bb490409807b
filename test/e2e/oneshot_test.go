package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
)

// The notebook application of the one-apply story (manifests/oneshot).
const (
	notebookNamespace = "notebook"
	notebookPolicy    = "notebook"
	notebookRestore   = "notebook-from-latest"
	// notebookApp is the namespace and the workloads; notebookRecovery is the same
	// with the VolumeRestore, as Git holds it while the namespace is rebuilt.
	notebookApp      = "test/e2e/manifests/oneshot/app"
	notebookRecovery = "test/e2e/manifests/oneshot/recovery"
)

// notebookWorkloads are the notebook's workloads: the pod label, the kubectl name, the
// directory its emptyDir is mounted at and the log line of a pod that found its data.
var notebookWorkloads = []struct {
	app, workload, dir, found string
}{
	{"notes", "deployment/notes", "/notes", "notes: found existing data"},
	{"journal", "statefulset/journal", "/journal", "journal: found existing data"},
}

// oneApplyRestoresADeletedNamespace: a Deployment and a StatefulSet are backed up,
// their namespace is deleted, and then one `kubectl apply -k` brings back the
// namespace, both workloads and the VolumeRestore, in kustomize's order: the
// namespace first, the restore (a custom resource) last, after the workloads whose
// pods are created while it is still on its way and then while it reads the store.
// Every pod waits in restore-wait and starts on its data; no pod starts on an empty
// volume, and no running pod is written into.
func (s *stories) oneApplyRestoresADeletedNamespace(t *testing.T) {
	ctx := t.Context()
	e := s.e
	e.Log("deploying the notebook: kubectl apply -k %s", notebookApp)
	if _, err := e.Kubectl(ctx, "", "apply", "-k", notebookApp); err != nil {
		t.Fatal(err)
	}
	for _, w := range notebookWorkloads {
		if _, err := e.Kubectl(ctx, "", "-n", notebookNamespace, "rollout", "status", w.workload, "--timeout=3m"); err != nil {
			t.Fatal(e.withPodState(ctx, notebookNamespace, err))
		}
	}
	if err := e.Apply(ctx, "oneshot-policy.yaml"); err != nil {
		t.Fatal(err)
	}
	run, err := e.RunPolicyNamed(ctx, notebookPolicy, "notebook-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 2 {
		t.Fatalf("%d backups of the notebook, want 2: %+v", len(run.Backups), run.Backups)
	}
	sums := map[string]string{}
	for _, w := range notebookWorkloads {
		if sums[w.app], err = e.ChecksumsIn(ctx, notebookNamespace, w.workload, w.dir); err != nil {
			t.Fatal(err)
		}
	}

	if err := e.DeleteNamespace(ctx, notebookNamespace); err != nil {
		t.Fatal(err)
	}

	e.Log("rebuilding the notebook in one step: kubectl apply -k %s (namespace, Deployment, StatefulSet, VolumeRestore)", notebookRecovery)
	out, err := e.Kubectl(ctx, "", "apply", "-k", notebookRecovery)
	if err != nil {
		t.Fatal(err)
	}
	// What kustomize did: the restore last.
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !strings.Contains(lines[len(lines)-1], "volumerestore") {
		t.Fatalf("kubectl apply -k did not apply the VolumeRestore last, so this is not the order the story is about:\n%s", out)
	}
	vr, err := e.WaitRestoreIn(ctx, notebookNamespace, notebookRestore)
	if err != nil {
		t.Fatal(err)
	}
	if vr.Status.VolumesCompleted != 2 || vr.Status.VolumesSkipped != 0 {
		out, _ := e.Kubectl(ctx, "", "-n", notebookNamespace, "describe", "vr", notebookRestore)
		t.Errorf("the restore restored %d volume(s) and left %d alone, want 2 and 0:\n%s", vr.Status.VolumesCompleted, vr.Status.VolumesSkipped, out)
	}
	for _, w := range notebookWorkloads {
		pod, err := e.PodIn(ctx, notebookNamespace, map[string]string{"app": w.app}, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		logs, err := e.Kubectl(ctx, "", "-n", notebookNamespace, "logs", pod.Name, "-c", w.app)
		if err != nil {
			t.Fatal(err)
		}
		checkRestoredPod(t, &Restored{Pod: pod, Restore: vr, Log: logs}, w.found)
		got, err := e.ChecksumsIn(ctx, notebookNamespace, w.workload, w.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != sums[w.app] {
			t.Errorf("%s: restored data differs:\n got %s\nwant %s", w.app, got, sums[w.app])
		}
	}
	// No pod of the namespace ever ran its application on an empty volume: the pods
	// created before the restore could say what they wait for were held unscheduled
	// and replaced, so every application container that ever started found its data.
	if err := s.noPodStartedEmpty(t, notebookNamespace); err != nil {
		t.Error(err)
	}
	events, _ := e.Kubectl(ctx, "", "-n", notebookNamespace, "get", "events", "--field-selector", "reason=RestorePlanned", "-o", "custom-columns=POD:.involvedObject.name,MESSAGE:.message")
	e.Show("Pods created before the restore was ready, held and replaced:", events)
}

// noPodStartedEmpty fails unless every pod of ns that has run an application
// container waited in restore-wait first, which exited 0.
func (s *stories) noPodStartedEmpty(t *testing.T, ns string) error {
	t.Helper()
	var pods corev1.PodList
	if err := s.e.Client.List(t.Context(), &pods, client.InNamespace(ns)); err != nil {
		return err
	}
	var bad []string
	for _, p := range pods.Items {
		started := false
		for _, c := range p.Status.ContainerStatuses {
			started = started || c.State.Running != nil || c.State.Terminated != nil || c.RestartCount > 0
		}
		if !started {
			continue
		}
		waited := false
		for _, c := range p.Status.InitContainerStatuses {
			if strings.HasPrefix(c.Name, restorewait.ContainerName) && c.State.Terminated != nil && c.State.Terminated.ExitCode == 0 {
				waited = true
			}
		}
		if !waited {
			bad = append(bad, p.Name)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("pods of %s ran their application without waiting for their data: %v", ns, bad)
	}
	return nil
}
