package restore

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Review M3: the restored replicas of a Deployment each get the data of one backed-up
// replica (its slot), never two pods the same one, and a pod keeps the slot its
// PodVolumeRestore records across passes. The pod webhook, which plans without slots,
// waits for a pod whose owner has a backup in any slot.
func TestPlanGivesEachReplicaItsOwnSlot(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5d8f7", Namespace: "shop",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep", Controller: new(true)}}}}
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(rs).Build()
	pod := func(name string, uid types.UID, created time.Time) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: uid, CreationTimestamp: metav1.NewTime(created),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7", UID: "rs", Controller: new(true)}}},
			Spec: corev1.PodSpec{NodeName: "node-1", Volumes: []corev1.Volume{
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "files", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "files"}}},
			}}}
	}
	backup := func(name, path, snapshot string, at time.Time) v1.PodVolumeBackup {
		start := metav1.NewTime(at)
		return v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: start},
			Spec:   v1.PodVolumeBackupSpec{SourcePath: path, StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia},
			Status: v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, StartTime: &start, SnapshotID: snapshot}}
	}
	// Replica 1 finished last: before slots, every replica got its data.
	src := sources{backups: []v1.PodVolumeBackup{
		backup("n1-a-cache", "/deployment/web/cache", "slot0", t0),
		backup("n1-b-cache", "/deployment/web/replica-1/cache", "slot1", t0.Add(time.Minute)),
		backup("n1-a-files", "/pvc/files", "files", t0),
	}}
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop", UID: "vr"},
		Spec: v1.VolumeRestoreSpec{Source: &v1.RestoreSource{Latest: true}}}
	a, b, extra := pod("web-5d8f7-aaaaa", "a", t0.Add(time.Hour)), pod("web-5d8f7-bbbbb", "b", t0.Add(2*time.Hour)), pod("web-5d8f7-ccccc", "c", t0.Add(3*time.Hour))
	all := func(*corev1.Pod) bool { return true }
	cacheOf := func(p *planner, pod *corev1.Pod) (string, string) {
		t.Helper()
		plan, err := p.plan(ctx, vr, pod, src)
		if err != nil {
			t.Fatal(err)
		}
		for _, vp := range plan.Volumes {
			if vp.Volume == "cache" {
				if vp.Point.SourcePath != vp.SourcePath {
					t.Errorf("pod %s: planned %s from a point of %s", pod.Name, vp.SourcePath, vp.Point.SourcePath)
				}
				return vp.SourcePath, vp.Point.SnapshotID
			}
		}
		for _, m := range plan.NoBackup {
			if m.Volume == "cache" {
				return "", m.Message
			}
		}
		t.Fatalf("pod %s: cache not planned: %+v", pod.Name, plan)
		return "", ""
	}

	tests := []struct {
		name     string
		pods     []corev1.Pod
		existing []v1.PodVolumeRestore
		want     map[string]string // pod -> snapshot of its cache, or a part of why it has none
	}{
		{"two replicas get the two backups, oldest pod slot 0", []corev1.Pod{b, a}, nil,
			map[string]string{"web-5d8f7-aaaaa": "slot0", "web-5d8f7-bbbbb": "slot1"}},
		{"a pod keeps the slot its PodVolumeRestore records", []corev1.Pod{a, b}, []v1.PodVolumeRestore{{Spec: v1.PodVolumeRestoreSpec{
			Pod: v1.PodReference{Name: "web-5d8f7-bbbbb", UID: "b"}, Volume: "cache", SourcePath: "/deployment/web/cache"}}},
			map[string]string{"web-5d8f7-aaaaa": "slot1", "web-5d8f7-bbbbb": "slot0"}},
		{"more replicas than backed-up ones: the newest gets none", []corev1.Pod{extra, b, a}, nil,
			map[string]string{"web-5d8f7-aaaaa": "slot0", "web-5d8f7-bbbbb": "slot1", "web-5d8f7-ccccc": "restored into other pods"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &planner{client: c}
			p.assignSlots(ctx, vr, tt.pods, tt.existing, src, all)
			seen := map[string]string{}
			for i := range tt.pods {
				pod := &tt.pods[i]
				path, got := cacheOf(p, pod)
				if want := tt.want[pod.Name]; got != want && !(path == "" && strings.Contains(got, want)) {
					t.Errorf("pod %s: cache restored from %q (%s), want %q", pod.Name, got, path, want)
				}
				if path != "" {
					if other, dup := seen[path]; dup {
						t.Errorf("pods %s and %s both restore %s", other, pod.Name, path)
					}
					seen[path] = pod.Name
				}
			}
		})
	}

	// The webhook plans without slots: any slot's backup makes the pod wait, and the
	// claim is planned as before.
	p := &planner{client: c}
	plan, err := p.plan(ctx, vr, &extra, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Volumes) != 2 {
		t.Errorf("webhook plan %+v, want cache and files", plan)
	}
	// Only slot 1 holds a backup (slot 0's expired): a new pod still waits for it.
	onlySlot1 := sources{backups: src.backups[1:2]}
	if plan, err := p.plan(ctx, vr, &a, onlySlot1); err != nil || len(plan.Volumes) != 1 || plan.Volumes[0].SourcePath != "/deployment/web/replica-1/cache" {
		t.Errorf("webhook plan with slot 1 alone: %+v, %v; want cache from slot 1", plan, err)
	}
	// A named backup is restored into every replica, as the user said.
	named := vr.DeepCopy()
	named.Spec.Source = &v1.RestoreSource{PodVolumeBackup: "n1-b-cache"}
	named.Spec.Volumes = []v1.RestoreVolume{{Name: "cache"}}
	p = &planner{client: c}
	p.assignSlots(ctx, named, []corev1.Pod{a, b}, nil, src, all)
	for _, pod := range []corev1.Pod{a, b} {
		plan, err := p.plan(ctx, named, &pod, src)
		if err != nil {
			t.Fatal(err)
		}
		// files comes after cache and is not named: it is left alone, not missing.
		if len(plan.Volumes) != 1 || plan.Volumes[0].Point.SnapshotID != "slot1" || len(plan.Missing) != 0 {
			t.Errorf("pod %s: plan %+v, want the named backup", pod.Name, plan)
		}
	}
}
