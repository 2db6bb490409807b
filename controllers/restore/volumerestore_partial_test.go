package restore

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestPartialRedirectedRestoreIsCarriedToEachVolume: spec.paths, a volume's own paths
// and spec.target.subPath reach the PodVolumeRestore of each volume (which the agent
// reads), and status.volumes says, per volume, what was restored and where.
func TestPartialRedirectedRestoreIsCarriedToEachVolume(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "data", "/pvc/data-db-0", "k-data", time.Now())
	createBackup(t, ns, "logs", "/pvc/logs-db-0", "k-logs", time.Now())
	createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil,
		claimVolume("data", "data-db-0"), claimVolume("logs", "logs-db-0"))

	createRestore(t, ns, "partial", v1.VolumeRestoreSpec{
		RunningPods: v1.RunningPodsOverwrite,
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Paths:       []v1.RestorePath{"tables/users", "config.yaml"},
		Volumes:     []v1.RestoreVolume{{Name: "data"}, {Name: "logs", Paths: []v1.RestorePath{"app.log"}}},
		Target:      &v1.RestoreTarget{SubPath: "restored"},
	})
	want := map[string][]v1.RestorePath{"data": {"tables/users", "config.yaml"}, "logs": {"app.log"}}
	testenv.Eventually(t, "a PodVolumeRestore per volume, with its paths and the sub-path", func() error {
		list := restoresOf(t, ns, "partial")
		if len(list) != 2 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		for _, pvr := range list {
			if !reflect.DeepEqual(pvr.Spec.Paths, want[pvr.Spec.Volume]) || pvr.Spec.SubPath != "restored" {
				return fmt.Errorf("volume %s: paths %q, subPath %q; want %q into restored", pvr.Spec.Volume, pvr.Spec.Paths, pvr.Spec.SubPath, want[pvr.Spec.Volume])
			}
		}
		return nil
	})

	finishRestores(t, ns, "partial", v1.RunCompleted, "")
	testenv.Eventually(t, "status.volumes with the paths and the sub-path", func() error {
		vr := getRestore(t, ns, "partial")
		if vr.Status.Phase != v1.RestoreCompleted || len(vr.Status.Volumes) != 2 {
			return fmt.Errorf("phase %q, volumes %+v", vr.Status.Phase, vr.Status.Volumes)
		}
		for _, st := range vr.Status.Volumes {
			var paths []string
			for _, p := range want[st.Volume] {
				paths = append(paths, string(p))
			}
			if !reflect.DeepEqual(st.Paths, paths) || st.SubPath != "restored" {
				return fmt.Errorf("status of volume %s: paths %q, subPath %q", st.Volume, st.Paths, st.SubPath)
			}
		}
		return nil
	})
}
