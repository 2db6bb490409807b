package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// fieldOwner stands for the GitOps tool applying the manifests.
const fieldOwner = "holdfast-install-test"

func apply(ctx context.Context, c client.Client, u *unstructured.Unstructured, opts ...client.ApplyOption) error {
	opts = append([]client.ApplyOption{client.FieldOwner(fieldOwner), client.ForceOwnership}, opts...)
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), opts...); err != nil {
		return fmt.Errorf("applying %s %s: %w", u.GetKind(), client.ObjectKeyFromObject(u), err)
	}
	return nil
}

// resourceVersions reads every object back and returns its resourceVersion.
func resourceVersions(t *testing.T, c client.Client, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(o), live); err != nil {
			t.Fatalf("reading %s %s: %v", o.GetKind(), client.ObjectKeyFromObject(o), err)
		}
		out[o.GetKind()+" "+client.ObjectKeyFromObject(o).String()] = live.GetResourceVersion()
	}
	return out
}

// The plain install as a GitOps tool applies it: the API server accepts every object
// (validation, defaulting, admission) with a server-side dry-run, and applying the same
// manifests twice, with server-side apply, changes nothing the second time: nothing in
// Holdfast's manifests is rewritten by the API server in a way that would show as
// drift. The CRDs and the namespace are applied for real first, as any install must.
func TestInstallOnAPIServer(t *testing.T) {
	e := testenv.Require(t, env)
	ctx := t.Context()
	b := build(t, "config/default")

	var first, rest []*unstructured.Unstructured
	for _, o := range b.objs {
		if o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "Namespace" {
			first = append(first, o)
		} else {
			rest = append(rest, o)
		}
	}
	t.Cleanup(func() {
		// Later tests of this package create Holdfast objects; installed webhook
		// configurations whose Service does not exist here would reject them.
		for _, o := range rest {
			if o.GetKind() == "ValidatingWebhookConfiguration" || o.GetKind() == "MutatingWebhookConfiguration" {
				if err := e.Client.Delete(context.Background(), o.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("deleting %s: %v", o.GetName(), err)
				}
			}
		}
	})
	for _, o := range first {
		if err := apply(ctx, e.Client, o); err != nil {
			t.Fatal(err)
		}
	}
	waitEstablished(t, e, first)

	t.Run("server-side dry-run", func(t *testing.T) {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(b.find("Deployment", "holdfast-manager").GroupVersionKind())
		key := client.ObjectKey{Namespace: ns, Name: "holdfast-manager"}
		existed := e.Client.Get(ctx, key, live) == nil // applied for real by an earlier -count run
		for _, o := range rest {
			if err := apply(ctx, e.Client, o, client.DryRunAll); err != nil {
				t.Error(err)
			}
		}
		if err := e.Client.Get(ctx, key, live); !existed && !apierrors.IsNotFound(err) {
			t.Errorf("after a dry-run the manager Deployment exists (err %v)", err)
		}
	})

	// Before the webhooks are installed (their Service has no endpoints here): the
	// user kinds, defaulted by their CRDs, do not drift either.
	t.Run("user objects apply twice without change", func(t *testing.T) {
		objs := samples(t, e.Namespace(t, nil))
		applyTwice(t, e, objs)
	})

	t.Run("install applies twice without change", func(t *testing.T) {
		applyTwice(t, e, append(append([]*unstructured.Unstructured{}, first...), rest...))
	})
}

func applyTwice(t *testing.T, e *testenv.Env, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if err := apply(t.Context(), e.Client, o); err != nil {
			t.Fatal(err)
		}
	}
	before := resourceVersions(t, e.Client, objs)
	for _, o := range objs {
		if err := apply(t.Context(), e.Client, o); err != nil {
			t.Fatal(err)
		}
	}
	after := resourceVersions(t, e.Client, objs)
	for k, rv := range before {
		if after[k] != rv {
			t.Errorf("%s changed on the second apply (resourceVersion %s -> %s)", k, rv, after[k])
		}
	}
}

// samples are the user-written samples of config/samples, the namespaced ones moved
// into namespace.
func samples(t *testing.T, namespace string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, f := range []string{
		"backup_v1alpha1_backupstoragelocation.yaml",
		"backup_v1alpha1_backupstoragelocation_filesystem.yaml",
		"backup_v1alpha1_volumebackuppolicy.yaml",
		"backup_v1alpha1_volumerestore.yaml",
	} {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", f))
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if u.GetNamespace() != "" {
			u.SetNamespace(namespace)
		}
		out = append(out, u)
	}
	return out
}

func waitEstablished(t *testing.T, e *testenv.Env, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			if err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
			for _, c := range conds {
				m := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s is not established: %v", o.GetName(), err)
		}
	}
}
