package restore

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// webReplicaSet creates the ReplicaSet of Deployment web in ns and returns the owner
// reference of its pods.
func webReplicaSet(t *testing.T, ns string) []metav1.OwnerReference {
	t.Helper()
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
	if err := env.Client.Create(ctxFor(t), rs); err != nil {
		t.Fatal(err)
	}
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
}

// waitDeleted waits until the held pod is gone: deleted before it was scheduled, for
// its controller to create it again.
func waitDeleted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	testenv.Eventually(t, "the held pod deleted", func() error {
		err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pod), &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod %s still there (%v)", pod.Name, err)
	})
}

// A namespace deleted and applied again in one step with its application and its
// restore: the restore reaches the API server after the first pods (kubectl apply -k
// orders custom resources last), and then reads the store. The first pod is held
// behind the scheduling gate (its namespace adopts an earlier namespace's backups and
// was just created), stays held while the restore reads the store, and is deleted
// once the restore is ready; the pod its controller creates then waits in restore-wait.
func TestAPodCreatedBeforeItsRestoreIsHeldUntilTheRestoreIsReady(t *testing.T) {
	testenv.Require(t, env)
	ctx := ctxFor(t)
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "held-", Annotations: map[string]string{v1.AnnotationAdoptBackups: "*"}}}
	if err := env.Client.Create(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	ns := nsObj.Name
	t.Cleanup(func() { _ = env.Client.Delete(ctxFor(t), nsObj) })
	const earlier = "00000000-0000-4000-8000-00000000ea72"
	taken := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	storeCatalog.set(ns, storage.RestorePoint{
		Snapshot: repository.Snapshot{ID: "k-earlier", SourcePath: "/deployment/web/data", StartTime: taken,
			Tags: map[string]string{identity.TagNamespaceUID: earlier}},
		Namespace: ns, StorageLocation: "default", Uploader: v1.UploaderKopia, Repository: "default-kopia",
	})
	t.Cleanup(func() { storeCatalog.set(ns) })
	brepo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: "default-kopia", Namespace: ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: "default", Uploader: v1.UploaderKopia}}
	if err := env.Client.Create(ctx, brepo); err != nil {
		t.Fatal(err)
	}
	brepo.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Connected",
		Message: "connected", LastTransitionTime: metav1.Now(), ObservedGeneration: brepo.Generation}}
	if err := env.Client.Status().Update(ctx, brepo); err != nil {
		t.Fatal(err)
	}

	// The Deployment's first pod, before the restore exists.
	owners := webReplicaSet(t, ns)
	first := createPod(t, ns, "web-5d9f-a", map[string]string{"app": "web"}, "", owners, emptyDirVolume("data"))
	if !restorewait.Gated(first) || len(first.Spec.InitContainers) != 0 {
		t.Fatalf("the first pod is not held: gates %v, init containers %v", first.Spec.SchedulingGates, first.Spec.InitContainers)
	}

	// The restore follows, and reads the store: the pod stays held.
	createRestore(t, ns, "web", v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}})
	testenv.Eventually(t, "the restore reading the store", func() error {
		vr := getRestore(t, ns, "web")
		if vr.Status.ObservedGeneration != vr.Generation || readyForPods(vr) {
			return fmt.Errorf("status %+v", vr.Status.Conditions)
		}
		return nil
	})
	second := createPod(t, ns, "web-5d9f-b", map[string]string{"app": "web"}, "", owners, emptyDirVolume("data"))
	if !restorewait.Gated(second) {
		t.Fatalf("a pod created while the restore reads the store is not held: %+v", second.Spec)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(first), first); err != nil || !restorewait.Gated(first) {
		t.Fatalf("the first pod was released before the restore was ready (%v): %v", err, first.Spec.SchedulingGates)
	}

	// The store is read: both held pods are deleted, and the pod created then waits.
	brepo.Status.RestorePoints = []v1.SourceRestorePoints{{SourcePath: "/deployment/web/data", NamespaceUID: earlier, Snapshots: 1,
		Oldest: metav1.NewTime(taken), Latest: metav1.NewTime(taken), LatestSnapshotID: "k-earlier"}}
	now := metav1.Now()
	brepo.Status.RestorePointsTime = &now
	if err := env.Client.Status().Update(ctx, brepo); err != nil {
		t.Fatal(err)
	}
	waitDeleted(t, first)
	waitDeleted(t, second)
	again := createPod(t, ns, "web-5d9f-c", map[string]string{"app": "web"}, "", owners, emptyDirVolume("data"))
	if restorewait.Gated(again) || len(again.Spec.InitContainers) == 0 || again.Spec.InitContainers[0].Name != restorewait.ContainerName {
		t.Fatalf("the pod created once the restore is ready does not wait in restore-wait: gates %v, init containers %v",
			again.Spec.SchedulingGates, again.Spec.InitContainers)
	}
}

// A bare pod held by a restore that becomes ready is not deleted (nothing would create
// it again): its gate is removed.
func TestABarePodIsReleasedNotDeleted(t *testing.T) {
	testenv.Require(t, env)
	ctx := ctxFor(t)
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "held-bare-", Annotations: map[string]string{v1.AnnotationAdoptBackups: "*"}}}
	if err := env.Client.Create(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctxFor(t), nsObj) })
	pod := createPod(t, nsObj.Name, "solo", map[string]string{"app": "solo"}, "", nil, emptyDirVolume("data"))
	if !restorewait.Gated(pod) {
		t.Fatalf("the pod is not held: %+v", pod.Spec.SchedulingGates)
	}
	createRestore(t, nsObj.Name, "solo", v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}}})
	testenv.Eventually(t, "the bare pod released", func() error {
		p := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return err
		}
		if restorewait.Gated(p) {
			return fmt.Errorf("still gated")
		}
		return nil
	})
}

func TestNamespaceMayRestore(t *testing.T) {
	created := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		adopt string
		at    time.Time
		want  bool
	}{
		{"a new namespace that adopts", "*", created.Add(time.Second), true},
		{"one that adopts, past the window", "*", created.Add(restoreHoldWindow), false},
		{"a new namespace that does not adopt", "", created.Add(time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
			if tc.adopt != "" {
				ns.Annotations = map[string]string{v1.AnnotationAdoptBackups: tc.adopt}
			}
			if got := namespaceMayRestore(ns, tc.at); got != tc.want {
				t.Errorf("namespaceMayRestore = %v, want %v", got, tc.want)
			}
		})
	}
}
