package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
)

// The local-path story's objects (manifests/localpath*.yaml).
const (
	localPathNamespace = "notes"
	localPathPolicy    = "notes-local-path"
	localPathRestore   = "notes-back"
)

// localPathClaimBackedUpAndRestored: on the default storage class of k3s and kind (a
// local-path provisioner: hostPath PersistentVolumes in one host directory, bound
// when the pod is scheduled), a pod's claim is backed up as any claim once the install
// names that directory (--host-path-roots, the kustomize component local-path), and its
// data comes back into a new pod. A second claim, on a hostPath volume outside the
// directory, is skipped HostPath at selection and does not fail the run.
func (s *stories) localPathClaimBackedUpAndRestored(t *testing.T) {
	ctx := t.Context()
	e := s.e
	data := filepath.Join(LocalPathRoot, "pvc-data_notes_data")
	outside := filepath.Join(e.Cluster.StateDir, "local-volumes", "notes-scratch")
	for _, dir := range []string{data, outside} {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { s.removeLocalPath(t, data, outside) })
	m, err := e.Manifest("localpath.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m = strings.NewReplacer("LOCALPATH_PV_PATH", data, "OUTSIDE_PV_PATH", outside).Replace(m)
	e.Log("deploying the namespace %s: a pod with two claims of the storage class local-path (WaitForFirstConsumer), one under %s", localPathNamespace, LocalPathRoot)
	if _, err := e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PodIn(ctx, localPathNamespace, map[string]string{"app": "notes"}, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	before, err := notesChecksums(ctx, e, "writer")
	if err != nil {
		t.Fatal(err)
	}

	run, err := e.RunPolicyNamed(ctx, localPathPolicy, "local-path-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 1 || run.Backups[0].Spec.SourcePath != "/pvc/data" || run.Backups[0].Status.Phase != backupv1alpha1.RunCompleted {
		t.Fatalf("the run's backups: %+v; want the claim data's, Completed", run.Backups)
	}
	st := run.Policy.Status
	if st.SelectedVolumes != 1 || len(st.Skipped) != 1 || st.Skipped[0].Reason != policyctrl.SkipHostPath ||
		len(st.Skipped[0].Examples) != 1 || st.Skipped[0].Examples[0] != localPathNamespace+"/writer/scratch" {
		t.Errorf("policy status: %d selected, skipped %+v; want scratch skipped HostPath", st.SelectedVolumes, st.Skipped)
	}
	if _, err := e.show(ctx, "A claim on a hostPath volume outside --host-path-roots is skipped, with the reason and an event:", "describe", "vbp", localPathPolicy); err != nil {
		t.Error(err)
	}

	e.Log("losing the notes: deleting the pod and the files on the node's disk")
	if _, err := e.Kubectl(ctx, "", "-n", localPathNamespace, "delete", "pod", "writer", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		if err := os.RemoveAll(filepath.Join(data, entry.Name())); err != nil {
			t.Fatal(err)
		}
	}
	e.Log("restoring into a new pod: VolumeRestore %s, then the pod reader on the same claim", localPathRestore)
	if _, err := e.ApplyRestoreFirst(ctx, localPathNamespace, "localpath-restore.yaml", localPathRestore); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, "localpath-reader.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitRestoreIn(ctx, localPathNamespace, localPathRestore); err != nil {
		for _, args := range [][]string{
			{"-n", localPathNamespace, "describe", "vr", localPathRestore},
			{"-n", localPathNamespace, "get", "pvr,pods", "-o", "wide"},
			{"-n", localPathNamespace, "describe", "pvr"},
			{"-n", localPathNamespace, "describe", "pod", "reader"},
			{"-n", "holdfast-system", "logs", "daemonset/holdfast-agent", "--tail=30"},
		} {
			out, kerr := e.Kubectl(context.Background(), "", args...)
			t.Logf("$ kubectl %s\n%s%v", strings.Join(args, " "), out, kerr)
		}
		t.Fatal(err)
	}
	if _, err := e.PodIn(ctx, localPathNamespace, map[string]string{"app": "notes"}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	after, err := notesChecksums(ctx, e, "reader")
	if err != nil {
		t.Fatal(err)
	}
	if after != before || !strings.Contains(after, "./2026/december.txt") {
		t.Errorf("the notes in the new pod:\n%s\nwant\n%s", after, before)
	}
	if got, err := e.Kubectl(ctx, "", "-n", localPathNamespace, "exec", "reader", "--", "cat", "/data/2026/december.txt"); err != nil || got != "minutes of the meeting\n" {
		t.Errorf("/data/2026/december.txt in the new pod: %q, %v", got, err)
	}
}

// notesChecksums returns sha256sum of every file under /data in pod, read inside it.
func notesChecksums(ctx context.Context, e *Env, pod string) (string, error) {
	return e.Kubectl(ctx, "", "-n", localPathNamespace, "exec", pod, "--", "sh", "-c", "cd /data && find . -type f | sort | xargs sha256sum")
}

// removeLocalPath deletes what the story deployed and made on the node.
func (s *stories) removeLocalPath(t *testing.T, dirs ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.e.DeleteNamespace(ctx, localPathNamespace); err != nil {
		t.Errorf("removing the story's namespace: %v", err)
	}
	if _, err := s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "--timeout=2m", "vbp/"+localPathPolicy, "pv/notes-data", "pv/notes-scratch", "storageclass/local-path"); err != nil {
		t.Errorf("removing the story's policy, volumes and storage class: %v", err)
	}
	for _, dir := range dirs { // the root is the agent's mount: teardown removes it
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	}
}
