package prometheus

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/holdfast-dev/holdfast/test/kustomize"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// componentDir is the component under test, relative to the repository root.
const componentDir = "config/prometheus"

// buildWithComponent runs kustomize, as kubectl, Argo CD and Flux do, on an overlay
// that adds the component to config/default, the way docs/alerts.md tells users to.
// extra is appended to the overlay's kustomization.
func buildWithComponent(t *testing.T, extra string) []*unstructured.Unstructured {
	t.Helper()
	dir, err := kustomize.Overlay(t.TempDir(), []string{"config/default"}, []string{componentDir}, extra)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kustomize.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the one object of that kind and name, failing the test otherwise.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			if found != nil {
				t.Fatalf("the build has two %s %s", kind, name)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("the build has no %s %s", kind, name)
	}
	return found
}

// decodeStrict decodes an object of the build into T, failing on any field T does not
// have: what the operator's CRD schema would prune or reject.
func decodeStrict[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	data, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	out := new(T)
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s %s does not decode strictly as %T: %v", u.GetKind(), u.GetName(), out, err)
	}
	return out
}

// docAnchors returns the GitHub anchors of the headings of docs/alerts.md.
func docAnchors(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}
