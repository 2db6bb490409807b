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

// TestRestoreFromAnotherSource: spec.volumes[].from restores a volume from the backups
// of another source identity of the namespace (a claim name, or a source path), not
// its own; a source only another namespace has backups of is not found without
// spec.sourceNamespace and its grant.
func TestRestoreFromAnotherSource(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	other := env.Namespace(t, nil)
	createBackup(t, ns, "db", "/pvc/data-db-0", "k-db", time.Now())
	createBackup(t, ns, "own", "/pvc/data-copy-0", "k-own", time.Now())
	createBackup(t, other, "elsewhere", "/pvc/secret-0", "k-secret", time.Now())
	createPod(t, ns, "copy-0", map[string]string{"app": "copy"}, "node-1", nil,
		claimVolume("data", "data-copy-0"), claimVolume("scratch", "scratch-copy-0"))

	createRestore(t, ns, "from-db", v1.VolumeRestoreSpec{
		RunningPods: v1.RunningPodsOverwrite,
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "copy"}},
		Volumes:     []v1.RestoreVolume{{Name: "data", From: "data-db-0"}, {Name: "scratch", From: "/pvc/secret-0"}},
	})
	testenv.Eventually(t, "data restored from the db claim's backup, scratch failed", func() error {
		list := restoresOf(t, ns, "from-db")
		if len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		if s := list[0].Spec; s.Volume != "data" || s.SnapshotID != "k-db" || s.SourcePath != "/pvc/data-db-0" {
			return fmt.Errorf("PodVolumeRestore of volume %s: snapshot %s of %s; want k-db of /pvc/data-db-0", s.Volume, s.SnapshotID, s.SourcePath)
		}
		vr := getRestore(t, ns, "from-db")
		for _, st := range vr.Status.Volumes {
			if st.Volume == "scratch" && st.Phase == v1.RunFailed {
				return nil
			}
		}
		return fmt.Errorf("status.volumes %+v: want scratch Failed, as namespace %s has no backup of /pvc/secret-0", vr.Status.Volumes, ns)
	})
}

// TestClaimRestoreFromAnotherClaimWithPaths: under claimSelector, spec.volumes[] names
// claims, and a claim's from and paths reach the PodVolumeRestore its writer pod gets.
func TestClaimRestoreFromAnotherClaimWithPaths(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "orig", "/pvc/data-orig-0", "k-orig", time.Now())
	createBoundClaim(t, ns, "data-copy-0", map[string]string{"app": "copy"})
	createRestore(t, ns, "copy", v1.VolumeRestoreSpec{
		ClaimSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "copy"}},
		Volumes:       []v1.RestoreVolume{{Name: "data-copy-0", From: "data-orig-0", Paths: []v1.RestorePath{"tables"}}},
	})
	testenv.Eventually(t, "a writer pod for the claim", func() error {
		if n := len(writerPods(t, ns)); n != 1 {
			return fmt.Errorf("%d writer pods", n)
		}
		return nil
	})
	writer := writerPods(t, ns)[0]
	runPod(t, &writer)
	testenv.Eventually(t, "the claim's PodVolumeRestore from the other claim's backup, with the paths", func() error {
		list := restoresOf(t, ns, "copy")
		if len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		s := list[0].Spec
		if s.SnapshotID != "k-orig" || s.SourcePath != "/pvc/data-orig-0" || !reflect.DeepEqual(s.Paths, []v1.RestorePath{"tables"}) {
			return fmt.Errorf("snapshot %s of %s, paths %q; want k-orig of /pvc/data-orig-0, [tables]", s.SnapshotID, s.SourcePath, s.Paths)
		}
		return nil
	})
}
