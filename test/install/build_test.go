package install

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/holdfast-dev/holdfast/test/kustomize"
)

// built is the output of one kustomize build.
type built struct {
	t    *testing.T
	objs []*unstructured.Unstructured
}

// build runs kustomize, as kubectl, Argo CD and Flux do, on a directory of the
// repository (relative to its root) or on an absolute directory.
func build(t *testing.T, dir string) *built {
	t.Helper()
	objs, err := kustomize.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &built{t: t, objs: objs}
}

// overlay writes a kustomization into a temporary directory whose resources and
// components are repository directories, the way a user's GitOps repository refers to
// Holdfast, and returns the directory. extra is appended to the kustomization.
func overlay(t *testing.T, resources, components []string, extra string) string {
	t.Helper()
	dir, err := kustomize.Overlay(t.TempDir(), resources, components, extra)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// find returns the object of that kind and name, failing the test when absent.
func (b *built) find(kind, name string) *unstructured.Unstructured {
	b.t.Helper()
	if o := b.lookup(kind, name); o != nil {
		return o
	}
	b.t.Fatalf("the build has no %s %s", kind, name)
	return nil
}

func (b *built) lookup(kind, name string) *unstructured.Unstructured {
	for _, o := range b.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (b *built) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range b.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// into converts an object of the build to its typed form.
func into[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s does not convert to %T: %v", u.GetKind(), u.GetName(), out, err)
	}
	return out
}

func (b *built) manager() (*appsv1.Deployment, *corev1.Container) {
	d := into[appsv1.Deployment](b.t, b.find("Deployment", "holdfast-manager"))
	return d, container(b.t, &d.Spec.Template.Spec, "manager")
}

func (b *built) agent() (*appsv1.DaemonSet, *corev1.Container) {
	ds := into[appsv1.DaemonSet](b.t, b.find("DaemonSet", "holdfast-agent"))
	return ds, container(b.t, &ds.Spec.Template.Spec, "agent")
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %s", name)
	return nil
}

func mount(t *testing.T, c *corev1.Container, name string) *corev1.VolumeMount {
	t.Helper()
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	t.Fatalf("container %s does not mount %s", c.Name, name)
	return nil
}

func envFrom(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
				t.Fatalf("%s of container %s is not from the downward API", name, c.Name)
			}
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	t.Fatalf("container %s has no %s", c.Name, name)
	return ""
}

func envValue(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	t.Fatalf("container %s has no %s", c.Name, name)
	return ""
}
