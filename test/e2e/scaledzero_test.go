package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
)

// The scaled-to-zero stories' objects (manifests/vault*.yaml).
const (
	vaultNamespace = "vault"
	vaultPolicy    = "vault-claims"
	vaultClaim     = "data-vault-0"
	vaultFiles     = "cd /data && find . -type f | sort | xargs sha256sum"
)

// vaultPVPath is the local PV of the vault StatefulSet, under the state directory so
// that teardown removes it.
func (s *stories) vaultPVPath() string {
	return filepath.Join(s.e.Cluster.StateDir, "local-volumes", "vault-data-0")
}

// statefulSetScaledToZeroBackedUp: a StatefulSet scaled to zero for maintenance
// keeps its claim, and no pod uses it. The policy's run backs the claim up anyway,
// through a reader pod the manager starts and deletes, continuing the claim's chain
// /pvc/<claim>.
func (s *stories) statefulSetScaledToZeroBackedUp(t *testing.T) {
	ctx := t.Context()
	e := s.e
	if err := os.MkdirAll(s.vaultPVPath(), 0o777); err != nil {
		t.Fatal(err)
	}
	s.parent.Cleanup(func() { s.removeVault(s.parent) })
	m, err := e.Manifest("vault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m = strings.ReplaceAll(m, "VAULT_PV_PATH", s.vaultPVPath())
	e.Log("deploying the namespace %s: a StatefulSet whose claim %s lies on a local PV", vaultNamespace, vaultClaim)
	if _, err := e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PodIn(ctx, vaultNamespace, map[string]string{"app": "vault"}, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if s.vaultSums, err = e.Kubectl(ctx, "", "-n", vaultNamespace, "exec", "vault-0", "--", "sh", "-c", vaultFiles); err != nil {
		t.Fatal(err)
	}

	e.Log("scaling the StatefulSet to zero: the claim stays, no pod uses it")
	if _, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "scale", "statefulset/vault", "--replicas=0"); err != nil {
		t.Fatal(err)
	}
	if err := s.waitNoPods(ctx, client.MatchingLabels{"app": "vault"}); err != nil {
		t.Fatal(err)
	}

	run, err := e.RunPolicyNamed(ctx, vaultPolicy, "scaled-to-zero-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Backups) != 1 {
		t.Fatalf("the run's backups: %+v; want the claim %s's", run.Backups, vaultClaim)
	}
	b := run.Backups[0]
	if b.Spec.SourcePath != "/pvc/"+vaultClaim || b.Spec.ClaimName != vaultClaim || b.Status.Phase != backupv1alpha1.RunCompleted {
		t.Errorf("backup %s: source %s, claim %s, phase %s (%s); want /pvc/%s, Completed", b.Name, b.Spec.SourcePath, b.Spec.ClaimName, b.Status.Phase, b.Status.Message, vaultClaim)
	}
	if !strings.HasPrefix(b.Spec.Pod.Name, vaultClaim+"-reader-") {
		t.Errorf("backup %s was made through pod %s, want the claim's reader pod", b.Name, b.Spec.Pod.Name)
	}
	if lr := run.Policy.Status.LastRun; lr.Outcome != backupv1alpha1.RunOutcomeSucceeded || lr.VolumesCompleted != 1 {
		t.Errorf("last run: %+v; want Succeeded with one volume", lr)
	}
	e.Log("waiting for the reader pod %s to be gone", b.Spec.Pod.Name)
	if err := s.waitNoPods(ctx, client.MatchingLabels{policyctrl.LabelComponent: policyctrl.ComponentReader}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.show(ctx, "A claim no pod uses, backed up through a reader pod that is gone afterwards:", "describe", "vbp", vaultPolicy); err != nil {
		t.Error(err)
	}
}

// waitNoPods waits until no pod of the vault namespace matches sel, not even one
// terminating.
func (s *stories) waitNoPods(ctx context.Context, sel client.MatchingLabels) error {
	var left []string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := s.e.Client.List(ctx, pods, client.InNamespace(vaultNamespace), sel); err != nil {
			left = []string{err.Error()}
			return false, nil
		}
		left = nil
		for _, p := range pods.Items {
			left = append(left, p.Name+" ("+string(p.Status.Phase)+")")
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return s.e.withPodState(ctx, vaultNamespace, fmt.Errorf("pods %v still there: %v: %w", sel, left, err))
	}
	return nil
}

// removeVault deletes what the stories deployed: at the end of the restore story, or
// of the stories when that one did not run. Once gone, nothing is left to delete.
func (s *stories) removeVault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := s.e.Client.Get(ctx, client.ObjectKey{Name: vaultNamespace}, &corev1.Namespace{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err := s.e.DeleteNamespace(ctx, vaultNamespace); err != nil {
		t.Errorf("removing the story's namespace: %v", err)
	}
	if _, err := s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "--timeout=2m", "vbp/"+vaultPolicy, "pv/vault-data-0", "storageclass/vault-local"); err != nil {
		t.Errorf("removing the story's policy, volume and storage class: %v", err)
	}
}

// statefulSetClaimsRestoredBeforeScaleUp: the vault's disk is lost while it is
// scaled to zero. The user deletes the StatefulSet and its claim, makes the claim
// again (the name and labels the StatefulSet gives it) on a new empty volume, restores
// it with a VolumeRestore that selects claims, and only then creates the StatefulSet
// and scales it up: its pod starts on the data of the backup, byte for byte, and no
// writer pod is left.
func (s *stories) statefulSetClaimsRestoredBeforeScaleUp(t *testing.T) {
	ctx := t.Context()
	e := s.e
	if s.vaultSums == "" {
		t.Fatal("the scaled-to-zero story did not back the vault up")
	}
	// The later stories do not need the vault.
	t.Cleanup(func() { s.removeVault(t) })
	e.Log("losing the vault's disk: deleting the StatefulSet, its claim and volume, and the volume's files")
	if _, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "delete", "statefulset/vault", "pvc/"+vaultClaim, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Kubectl(ctx, "", "delete", "pv/vault-data-0", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.vaultPVPath()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.vaultPVPath(), 0o777); err != nil {
		t.Fatal(err)
	}

	e.Log("making the claim %s again, empty, and restoring it: VolumeRestore vault-back with claimSelector app=vault", vaultClaim)
	m, err := e.Manifest("vault-restore.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m = strings.ReplaceAll(m, "VAULT_PV_PATH", s.vaultPVPath())
	if _, err := e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	vr, err := e.WaitRestoreIn(ctx, vaultNamespace, "vault-back")
	if err != nil {
		for _, args := range [][]string{
			{"-n", vaultNamespace, "get", "pvc,pvr,pods", "-o", "wide"},
			{"-n", vaultNamespace, "describe", "pvr"},
			{"-n", "holdfast-system", "logs", "daemonset/holdfast-agent", "--tail=30"},
		} {
			out, kerr := e.Kubectl(context.Background(), "", args...)
			t.Logf("$ kubectl %s\n%s%v", strings.Join(args, " "), out, kerr)
		}
		t.Fatal(err)
	}
	if len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].Claim != vaultClaim || !strings.HasPrefix(vr.Status.Volumes[0].Pod, vaultClaim+"-writer-") ||
		vr.Status.Volumes[0].Phase != backupv1alpha1.RunCompleted {
		t.Errorf("status.volumes %+v; want the claim %s restored through its writer pod", vr.Status.Volumes, vaultClaim)
	}
	if err := s.waitNoPods(ctx, client.MatchingLabels{"app.kubernetes.io/component": "claim-writer"}); err != nil {
		t.Fatal(err)
	}
	// The claim was made unbound: the scheduler bound it for the writer pod, its first
	// consumer.
	if bound, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "get", "pvc", vaultClaim, "-o", "jsonpath={.status.phase} {.spec.volumeName}"); err != nil || bound != "Bound vault-data-0" {
		t.Errorf("claim %s: %q (%v); want it bound to vault-data-0 for the writer pod", vaultClaim, bound, err)
	}
	if _, err := e.show(ctx, "A claim restored before its StatefulSet is scaled up, through a writer pod that is gone afterwards:", "-n", vaultNamespace, "describe", "vr", "vault-back"); err != nil {
		t.Error(err)
	}

	e.Log("creating the StatefulSet at zero replicas, then scaling it up")
	m, err = e.Manifest("vault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The StatefulSet alone: the volume and the claim are the restored ones.
	var sts string
	for _, doc := range strings.Split(m, "\n---\n") {
		if strings.Contains(doc, "\nkind: StatefulSet\n") {
			sts = strings.Replace(doc, "  replicas: 1\n", "  replicas: 0\n", 1)
		}
	}
	if _, err := e.Kubectl(ctx, sts, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "scale", "statefulset/vault", "--replicas=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PodIn(ctx, vaultNamespace, map[string]string{"app": "vault"}, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	after, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "exec", "vault-0", "--", "sh", "-c", vaultFiles)
	if err != nil {
		t.Fatal(err)
	}
	if after != s.vaultSums || !strings.Contains(after, "./keys/master.key") {
		t.Errorf("the vault's files after the restore:\n%s\nwant, as backed up:\n%s", after, s.vaultSums)
	}
	if logs, err := e.Kubectl(ctx, "", "-n", vaultNamespace, "logs", "vault-0"); err != nil || !strings.Contains(logs, "vault: found existing data") {
		t.Errorf("the vault's log %q (%v); want it to start on its restored data", logs, err)
	}
}
