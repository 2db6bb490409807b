package restore

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// readyFor waits until the restore has seen its spec and read the store: what the
// webhook needs before it holds a pod for it.
func readyFor(t *testing.T, ns, name string) {
	t.Helper()
	testenv.Eventually(t, "restore "+name+" ready for pods", func() error {
		vr := getRestore(t, ns, name)
		if !readyForPods(vr) {
			return fmt.Errorf("observed generation %d of %d, conditions %+v", vr.Status.ObservedGeneration, vr.Generation, vr.Status.Conditions)
		}
		return nil
	})
}

// An application pod that starts while a writer pod restores its claim is held by
// restore-wait (it must not see half-restored data); the claim is not "in use", the
// writer pod goes on, and the agent releases the pod when the claim's restore ends.
func TestAPodStartingWhileItsClaimIsWrittenWaits(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "vault-1", "/pvc/data-vault-0", "k-vault", time.Now())
	createBoundClaim(t, ns, "data-vault-0", map[string]string{"app": "vault"})
	vr := restoreClaims(t, ns, "vault", "vault", "")
	var writer corev1.Pod
	testenv.Eventually(t, "a writer pod", func() error {
		pods := writerPods(t, ns)
		if len(pods) != 1 {
			return fmt.Errorf("%d writer pods", len(pods))
		}
		writer = pods[0]
		return nil
	})
	runPod(t, &writer)
	testenv.Eventually(t, "a PodVolumeRestore for the writer pod", func() error {
		if list := restoresOf(t, ns, "vault"); len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		return nil
	})
	readyFor(t, ns, "vault")

	app := createPod(t, ns, "vault-0", map[string]string{"app": "vault"}, "", nil, claimVolume("data", "data-vault-0"))
	if !restorewait.Holds(app, string(vr.UID)) {
		t.Fatalf("a pod that mounts a claim being restored starts without waiting: init containers %+v", app.Spec.InitContainers)
	}
	if waited := restorewait.WaitedVolumes(app)["vault"]; len(waited) != 1 || waited[0] != "data" {
		t.Errorf("the pod waits for %v, want its volume data", waited)
	}
	finishRestores(t, ns, "vault", v1.RunCompleted, "")
	testenv.Eventually(t, "restore Completed, the claim not skipped", func() error {
		vr := getRestore(t, ns, "vault")
		if vr.Status.Phase != v1.RestoreCompleted || vr.Status.VolumesSkipped != 0 || len(vr.Status.Volumes) != 1 {
			return fmt.Errorf("status %+v", vr.Status)
		}
		return goneOrTerminating(t, ns, writer.Name)
	})
}

// A pod held for a claim before its writer pod runs is restored through: the claim's
// PodVolumeRestore is made for the held pod, and the writer pod, not needed, goes.
func TestAPodHeldBeforeTheWriterRunsIsRestoredThrough(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "vault-1", "/pvc/data-vault-0", "k-vault", time.Now())
	createBoundClaim(t, ns, "data-vault-0", map[string]string{"app": "vault"})
	vr := restoreClaims(t, ns, "vault", "vault", "")
	var writer string
	testenv.Eventually(t, "a writer pod", func() error {
		pods := writerPods(t, ns)
		if len(pods) != 1 {
			return fmt.Errorf("%d writer pods", len(pods))
		}
		writer = pods[0].Name
		return nil
	})
	readyFor(t, ns, "vault")
	app := createPod(t, ns, "vault-0", map[string]string{"app": "vault"}, "node-1", nil, claimVolume("data", "data-vault-0"))
	if !restorewait.Holds(app, string(vr.UID)) {
		t.Fatalf("a pod that mounts a claim about to be restored starts without waiting: init containers %+v", app.Spec.InitContainers)
	}
	testenv.Eventually(t, "the claim restored through the held pod, the writer pod deleted", func() error {
		list := restoresOf(t, ns, "vault")
		if len(list) != 1 || list[0].Spec.Pod.UID != string(app.UID) || list[0].Spec.Volume != "data" {
			return fmt.Errorf("PodVolumeRestores %+v", list)
		}
		return goneOrTerminating(t, ns, writer)
	})
	testenv.Eventually(t, "a WriterPodDeleted event", func() error {
		return eventOf(t, ns, "vault", "WriterPodDeleted", "restored through pod vault-0")
	})
}

// A claim restore holds only pods that mount a claim it restores: its podSelector is
// empty, and must not select every pod of the namespace.
func TestAClaimRestoreHoldsNoOtherPod(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "other-1", "/pvc/other", "k-other", time.Now())
	createBoundClaim(t, ns, "other", map[string]string{"app": "other"})
	restoreClaims(t, ns, "vault", "vault", "")
	readyFor(t, ns, "vault")
	pod := createPod(t, ns, "other-0", map[string]string{"app": "other"}, "", nil, claimVolume("data", "other"))
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("a pod whose claim no restore selects was held: init containers %+v", pod.Spec.InitContainers)
	}
}

// holding, which the webhook and the held-pod controller use for podSelector
// restores, never takes a claim restore: its empty podSelector would select every pod
// (gate it, release it).
func TestHoldingLeavesClaimRestoresOut(t *testing.T) {
	now := time.Now()
	claims := v1.VolumeRestore{Spec: v1.VolumeRestoreSpec{ClaimSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "vault"}}}}
	claims.CreationTimestamp = metav1.NewTime(now)
	pods := v1.VolumeRestore{Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "vault"}}}}
	pods.CreationTimestamp = metav1.NewTime(now)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "vault"}}}
	got := holding([]v1.VolumeRestore{claims, pods}, pod, now)
	if len(got) != 1 || got[0].Spec.ClaimSelector != nil {
		t.Errorf("holding took %d restore(s) (%+v), want only the podSelector one", len(got), got)
	}
}
