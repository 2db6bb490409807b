package v1alpha1_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestRestorePathValidateAgreesWithTheAPIServer: RestorePath.Validate, which a browse
// session and the CLI use, accepts exactly the paths the API server accepts in
// spec.paths (within the schema's length bound).
func TestRestorePathValidateAgreesWithTheAPIServer(t *testing.T) {
	env := testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	for _, p := range []string{
		"data", "data/2026/x.txt", ".hidden", "..data", "data..", "a b/ c", "...", "é/ü",
		strings.Repeat("a/", 500) + "b",
		"/data", "data/", "data//x", ".", "..", "./data", "data/.", "data/../etc", "../etc", "/", "//",
	} {
		vr := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "backup.holdfast.dev/v1alpha1", "kind": "VolumeRestore",
			"metadata": map[string]any{"name": "paths", "namespace": ns},
			"spec":     map[string]any{"podSelector": map[string]any{}, "paths": []any{p}},
		}}
		apiErr := env.Client.Create(ctxFor(t), vr, client.DryRunAll)
		goErr := v1.RestorePath(p).Validate()
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("path %q: the API server says %v, Validate says %v", p, apiErr, goErr)
		}
	}
}
