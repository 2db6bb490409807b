package restore

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Issue 15 item 4: a ReadWriteMany claim that two held pods mount is restored once,
// by one PodVolumeRestore, not twice concurrently into one filesystem; the restore's
// status shows both pods' volumes with that restore's phase and counts the claim once.
func TestASharedClaimIsRestoredOnce(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	createBackup(t, ns, "nightly-shared", "/pvc/shared", "k-shared", time.Now())
	createRestore(t, ns, "app-restore", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	heldPod := func(prefix string) *corev1.Pod {
		var pod *corev1.Pod
		testenv.Eventually(t, "the webhook holding pod "+prefix, func() error {
			p := createPod(t, ns, fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%100000), map[string]string{"app": "web"}, "", nil,
				claimVolume("data", "shared"))
			if len(p.Spec.InitContainers) == 0 {
				_ = env.Client.Delete(ctx, p, client.GracePeriodSeconds(0))
				return fmt.Errorf("pod %s got no init container", p.Name)
			}
			pod = p
			return nil
		})
		return pod
	}
	a := heldPod("a")
	b := heldPod("b")
	if got := restorewait.MarkerPodUID(b, string(getRestore(t, ns, "app-restore").UID)); got != string(b.UID) {
		t.Errorf("restore-wait of pod %s does not learn its pod UID (%s), so it could not tell its marker from pod %s's", b.Name, restorewait.EnvPodUID, a.Name)
	}
	bindPod(t, a)
	bindPod(t, b)
	testenv.Eventually(t, "one PodVolumeRestore of the claim, both pods shown", func() error {
		list := restoresOf(t, ns, "app-restore")
		if len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores, want 1 for the one claim", len(list))
		}
		if list[0].Spec.Pod.Name != a.Name {
			return fmt.Errorf("the claim is restored with pod %s, want the older pod %s", list[0].Spec.Pod.Name, a.Name)
		}
		vr := getRestore(t, ns, "app-restore")
		if len(vr.Status.Volumes) != 2 || vr.Status.VolumesTotal != 1 {
			return fmt.Errorf("status volumes %+v, total %d; want both pods, one volume", vr.Status.Volumes, vr.Status.VolumesTotal)
		}
		for _, v := range vr.Status.Volumes {
			if v.PodVolumeRestore != list[0].Name || v.Phase != v1.RunPending {
				return fmt.Errorf("volume %s of pod %s: %+v, want served by %s, Pending", v.Volume, v.Pod, v, list[0].Name)
			}
		}
		return nil
	})

	finishRestores(t, ns, "app-restore", v1.RunCompleted, "")
	testenv.Eventually(t, "restore Completed, the claim counted once", func() error {
		vr := getRestore(t, ns, "app-restore")
		if vr.Status.Phase != v1.RestoreCompleted || vr.Status.VolumesCompleted != 1 || vr.Status.VolumesTotal != 1 {
			return fmt.Errorf("phase %s, %d of %d completed", vr.Status.Phase, vr.Status.VolumesCompleted, vr.Status.VolumesTotal)
		}
		for _, v := range vr.Status.Volumes {
			if v.Phase != v1.RunCompleted {
				return fmt.Errorf("volume %s of pod %s is %s", v.Volume, v.Pod, v.Phase)
			}
		}
		if len(restoresOf(t, ns, "app-restore")) != 1 {
			return fmt.Errorf("a second PodVolumeRestore appeared")
		}
		return nil
	})
}
