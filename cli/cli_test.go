package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// holdfast runs kubectl holdfast against the test API server through its kubeconfig,
// as a user would, and returns stdout, stderr and the exit code. With
// $HOLDFAST_CLI_TRANSCRIPT set, it appends the command and its output to that file
// (the transcripts of docs/cli.md).
func holdfast(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	e := testenv.Require(t, env)
	var stdout, stderr bytes.Buffer
	root := append([]string{"--kubeconfig", e.Kubeconfig}, args...)
	code := runWithInput(t.Context(), root, strings.NewReader(stdin), &stdout, &stderr)
	if f := os.Getenv("HOLDFAST_CLI_TRANSCRIPT"); f != "" {
		out, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintf(out, "$ kubectl holdfast %s\n%s%s(exit %d)\n\n", strings.Join(args, " "), stdout.String(), stderr.String(), code)
			out.Close()
		}
	}
	return stdout.String(), stderr.String(), code
}

// objects creates the objects of one test.
type objects struct {
	t   *testing.T
	e   *testenv.Env
	ctx context.Context
}

func newObjects(t *testing.T) *objects {
	return &objects{t: t, e: testenv.Require(t, env), ctx: t.Context()}
}

func (o *objects) create(obj client.Object) {
	o.t.Helper()
	if err := o.e.Client.Create(o.ctx, obj); err != nil {
		o.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
	o.t.Cleanup(func() {
		if err := o.e.Client.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			o.t.Errorf("deleting %T %s: %v", obj, obj.GetName(), err)
		}
	})
}

// app creates a claim and a Running pod on node-a that mounts it as volume data, with
// an emptyDir cache beside it.
func (o *objects) app(ns, name string) {
	o.t.Helper()
	o.create(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name + "-data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name + "-data"}}},
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}}}
	o.create(pod)
	pod.Status.Phase = corev1.PodRunning
	if err := o.e.Client.Status().Update(o.ctx, pod); err != nil {
		o.t.Fatal(err)
	}
}

// policy creates a policy that backs up the claims of the namespaces namespaces
// selects, to the storage location default.
func (o *objects) policy(name, namespaces string) *v1.VolumeBackupPolicy {
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.VolumeBackupPolicySpec{StorageLocation: "default",
			Selector: v1.VolumeSelector{Namespaces: namespaces, Volumes: "pvc != null"}}}
	o.create(p)
	return p
}

// locationReady creates the storage location default and marks it Ready, standing in
// for the storage controller.
func (o *objects) locationReady() {
	o.t.Helper()
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/backups"}}}
	if err := o.e.Client.Create(o.ctx, bsl); err != nil && !apierrors.IsAlreadyExists(err) {
		o.t.Fatal(err)
	}
	testenv.Eventually(o.t, "storage location default Ready", func() error {
		if err := o.e.Client.Get(o.ctx, client.ObjectKey{Name: "default"}, bsl); err != nil {
			return err
		}
		apimeta.SetStatusCondition(&bsl.Status.Conditions, metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: "Probed", Message: "probed", ObservedGeneration: bsl.Generation})
		return o.e.Client.Status().Update(o.ctx, bsl)
	})
}
