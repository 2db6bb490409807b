package restore

import (
	"fmt"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Review M3, through the restore controller: two replicas of a Deployment whose
// emptyDirs were backed up into two slots get one slot each, recorded in their
// PodVolumeRestores, not both the replica that finished last.
func TestEachReplicaGetsTheDataOfOneBackedUpReplica(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d9f", Namespace: ns, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep-uid", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	createBackup(t, ns, "nightly-a-cache", "/deployment/web/cache", "k-slot0", now.Add(-time.Minute))
	createBackup(t, ns, "nightly-b-cache", "/deployment/web/replica-1/cache", "k-slot1", now) // finished last
	owners := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
	createPod(t, ns, "web-5d9f-aaaaa", map[string]string{"app": "web"}, "node-1", owners, emptyDirVolume("cache"))
	createPod(t, ns, "web-5d9f-bbbbb", map[string]string{"app": "web"}, "node-1", owners, emptyDirVolume("cache"))
	createRestore(t, ns, "both", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Source:      &v1.RestoreSource{Latest: true},
		RunningPods: v1.RunningPodsOverwrite,
	})
	testenv.Eventually(t, "one PodVolumeRestore per replica, each from its own slot", func() error {
		list := restoresOf(t, ns, "both")
		got := []string{}
		for _, pvr := range list {
			got = append(got, pvr.Spec.Pod.Name+"="+pvr.Spec.SnapshotID+"@"+pvr.Spec.SourcePath)
		}
		sort.Strings(got)
		want := []string{"web-5d9f-aaaaa=k-slot0@/deployment/web/cache", "web-5d9f-bbbbb=k-slot1@/deployment/web/replica-1/cache"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("restores %v, want %v", got, want)
		}
		return nil
	})
}
