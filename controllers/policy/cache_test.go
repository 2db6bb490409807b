package policy

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The manager's cache (CacheOptions, as `holdfast manager` sets it) keeps objects
// without their managedFields, a tenth of the manager's heap at 10,000 pods, and
// keeps everything else: a pod and a PodVolumeBackup read through it equal what the
// API server holds but for managedFields. (The rest of this package's tests run the
// policy controller on the same cache.)
func TestTheManagerCacheDropsManagedFieldsOnly(t *testing.T) {
	e := testenv.Require(t, env)
	ctx := t.Context()
	ns := e.Namespace(t, map[string]string{"team": "a"})
	w := &workload{t: t, e: e, ctx: ctx, ns: ns}
	w.claim("data", corev1.PersistentVolumeFilesystem)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Labels: map[string]string{"app": "db"},
			Annotations:     map[string]string{"example.com/owner": "team-a"},
			OwnerReferences: []metav1.OwnerReference{*controllerRef("ReplicaSet", "app-1", "uid-1")}},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "default",
			Volumes: []corev1.Volume{emptyDir("scratch"),
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
			Containers: []corev1.Container{{Name: "db", Image: "db:1",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/db"}, {Name: "scratch", MountPath: "/tmp"}}}}},
	}
	w.create(pod)
	pod.Status.Phase = corev1.PodRunning
	if err := e.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: ns, Labels: map[string]string{v1.LabelPolicy: "p", v1.LabelRun: "r"}},
		Spec: v1.PodVolumeBackupSpec{Node: "node-a", Pod: v1.PodReference{Name: "app", UID: string(pod.UID)}, Volume: "data",
			ClaimName: "data", SourcePath: "/" + ns + "/data", StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia,
			Tags: map[string]string{"policy": "p"}},
	}
	w.create(pvb)
	pvb.Status.Phase, pvb.Status.SnapshotID = v1.RunCompleted, "k0123"
	if err := e.Client.Status().Update(ctx, pvb); err != nil {
		t.Fatal(err)
	}

	opts := CacheOptions()
	opts.Scheme = e.Scheme
	c, err := cache.New(e.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = c.Start(cctx) }()

	for _, tc := range []struct {
		name               string
		fromAPI, fromCache client.Object
	}{
		{"app", &corev1.Pod{}, &corev1.Pod{}},
		{"b", &v1.PodVolumeBackup{}, &v1.PodVolumeBackup{}},
	} {
		key := client.ObjectKey{Namespace: ns, Name: tc.name}
		if err := e.Client.Get(ctx, key, tc.fromAPI); err != nil {
			t.Fatal(err)
		}
		if len(tc.fromAPI.GetManagedFields()) == 0 {
			t.Fatalf("%T %s: the API server returned no managedFields; the test proves nothing", tc.fromAPI, key)
		}
		eventually(t, fmt.Sprintf("%T %s in the cache", tc.fromCache, key), func() error {
			if err := c.Get(ctx, key, tc.fromCache); err != nil {
				return err
			}
			if tc.fromCache.GetResourceVersion() != tc.fromAPI.GetResourceVersion() {
				return fmt.Errorf("resourceVersion %s, want %s", tc.fromCache.GetResourceVersion(), tc.fromAPI.GetResourceVersion())
			}
			return nil
		})
		if mf := tc.fromCache.GetManagedFields(); len(mf) != 0 {
			t.Errorf("%T %s: the cache keeps %d managedFields entries", tc.fromCache, key, len(mf))
		}
		// The cache's copy carries its kind, the typed client's does not.
		for _, o := range []client.Object{tc.fromAPI, tc.fromCache} {
			o.SetManagedFields(nil)
			o.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
		}
		if !equality.Semantic.DeepEqual(tc.fromAPI, tc.fromCache) {
			t.Errorf("%T %s: the cache's copy differs from the API server's beyond managedFields:\ncache %+v\napi   %+v", tc.fromCache, key, tc.fromCache, tc.fromAPI)
		}
	}
}
