package install

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The argocd-cm snippet users copy holds exactly the tested scripts, one per user kind.
func TestArgoCDConfigMapMatchesScripts(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "docs", "gitops", "argocd")
	data, err := os.ReadFile(filepath.Join(dir, "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := yaml.UnmarshalStrict(data, cm); err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != len(userKinds) {
		t.Errorf("argocd-cm.yaml has %d keys, want one per user kind (%d)", len(cm.Data), len(userKinds))
	}
	for _, k := range userKinds {
		key := "backup.holdfast.dev_" + k.kind
		script, err := os.ReadFile(filepath.Join(dir, key, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.Data["resource.customizations.health."+key]; got != string(script) {
			t.Errorf("argocd-cm.yaml's script for %s differs from %s/health.lua", k.kind, key)
		}
	}
}

// The Flux example's health checks name kinds Holdfast installs.
func TestFluxExampleHealthChecks(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gitops", "flux", "holdfast.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, crd := range build(t, "config/crd").objs {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		kinds[group+"/v1alpha1/"+kind] = true
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	checks := 0
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("flux/holdfast.yaml: %v", err)
		}
		hc, _, _ := unstructured.NestedSlice(u.Object, "spec", "healthChecks")
		for _, c := range hc {
			m := c.(map[string]any)
			apiVersion, kind := m["apiVersion"].(string), m["kind"].(string)
			if !strings.HasPrefix(apiVersion, "backup.holdfast.dev/") || !kinds[apiVersion+"/"+kind] {
				t.Errorf("health check on %s %s: not a Holdfast kind", apiVersion, kind)
			}
			checks++
		}
	}
	if checks == 0 {
		t.Error("the Flux example has no health checks")
	}
}
