package restore

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// A pod that restore-wait held has a marker volume; a restore into it later (a
// data-only restore) never restores into that volume, even from a backup of it that a
// policy took before policies left it out.
func TestPlanLeavesRestoreWaitsMarkerVolume(t *testing.T) {
	start := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	backup := func(name, path string) v1.PodVolumeBackup {
		return v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: start},
			Spec:   v1.PodVolumeBackupSpec{SourcePath: path, StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia},
			Status: v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, StartTime: &start, SnapshotID: name}}
	}
	src := sources{backups: []v1.PodVolumeBackup{backup("data", "/pod/db/data"), backup("markers", "/pod/db/"+restorewait.MarkerVolumeName)}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop", UID: "db"},
		Spec: corev1.PodSpec{NodeName: "node-1",
			InitContainers: []corev1.Container{restorewait.Container(restorewait.ContainerName, "vr-0", []string{"data"}, restorewait.MarkerVolumeName, 0, corev1.Container{})},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				restorewait.MarkerVolume(restorewait.MarkerVolumeName)}}}
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop", UID: "vr"},
		Spec: v1.VolumeRestoreSpec{Source: &v1.RestoreSource{Latest: true}}}
	p := &planner{client: fake.NewClientBuilder().WithScheme(testenv.Scheme()).Build()}
	plan, err := p.plan(context.Background(), vr, pod, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Volumes) != 1 || plan.Volumes[0].Volume != "data" {
		t.Errorf("planned %+v, want the volume data only", plan.Volumes)
	}
}
