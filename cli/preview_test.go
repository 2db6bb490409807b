package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// A policy change in review that drops a namespace: preview lists the volumes of that
// namespace as losing protection (exit 0, or 3 with --fail-on-unprotect), from a file,
// from stdin and from a kustomize directory alike.
func TestPreviewShowsVolumesLosingProtection(t *testing.T) {
	o := newObjects(t)
	e := testenv.Require(t, env)
	kept, dropped := e.Namespace(t, nil), e.Namespace(t, nil)
	o.app(kept, "web")
	o.app(dropped, "db")
	name := "preview-" + kept
	o.policy(name, fmt.Sprintf("namespace.metadata.name in [%q, %q]", kept, dropped))

	proposed := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: ignored
---
apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeBackupPolicy
metadata:
  name: %s
spec:
  storageLocation: default
  selector:
    namespaces: namespace.metadata.name == %q
    volumes: pvc != null
`, name, kept)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(proposed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources:\n- policy.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	out, stderr, code := holdfast(t, "", "preview", "-f", file)
	if code != ExitOK {
		t.Fatalf("preview: exit %d, want 0: %s", code, stderr)
	}
	wantLines(t, out,
		fmt.Sprintf("VolumeBackupPolicy %s (Changed): selects 1 volume, skips 0", name),
		fmt.Sprintf("%s   web   data   web-data   yes", kept),
		"Become protected: none",
		"Stop being protected by any policy: 1",
		fmt.Sprintf("%s   /pvc/db-data   db-data   db    Protected (%s)   Unprotected", dropped, name))

	for _, input := range []struct {
		name, stdin string
		args        []string
	}{
		{"file", "", []string{"-f", file}},
		{"stdin", proposed, []string{"-f", "-"}},
		{"kustomize", "", []string{"-k", dir}},
	} {
		out, stderr, code = holdfast(t, input.stdin, append([]string{"preview", "--fail-on-unprotect", "-o", "json"}, input.args...)...)
		if code != ExitUnprotect {
			t.Fatalf("%s: preview --fail-on-unprotect: exit %d, want %d: %s", input.name, code, ExitUnprotect, stderr)
		}
		var res PreviewResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%s: %v: %s", input.name, err, out)
		}
		if len(res.Unprotected) != 1 || res.Unprotected[0].Namespace != dropped || res.Unprotected[0].Claim != "db-data" {
			t.Errorf("%s: unprotected %+v, want claim %s/db-data", input.name, res.Unprotected, dropped)
		}
		if !strings.Contains(stderr, "1 volume would no longer be protected by any policy") {
			t.Errorf("%s: stderr %q", input.name, stderr)
		}
	}

	// The policy unchanged: nothing changes, and the flag does not fail.
	same := strings.Replace(proposed, fmt.Sprintf("namespace.metadata.name == %q", kept),
		fmt.Sprintf("namespace.metadata.name in [%q, %q]", kept, dropped), 1)
	out, stderr, code = holdfast(t, same, "preview", "--fail-on-unprotect", "-f", "-")
	if code != ExitOK {
		t.Fatalf("unchanged policy: exit %d: %s%s", code, out, stderr)
	}
	wantLines(t, out, "(SelectionUnchanged): selects 2 volumes", "Stop being protected by any policy: none")
}

// A proposed policy whose selector does not compile is rejected as the webhook would
// reject it: exit 1 and the message names the field.
func TestPreviewRejectsABadSelector(t *testing.T) {
	bad := `apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeBackupPolicy
metadata:
  name: preview-bad-selector
spec:
  storageLocation: default
  selector:
    volumes: volume.nmae == "data"
`
	out, stderr, code := holdfast(t, bad, "preview", "-f", "-")
	if code != ExitError {
		t.Fatalf("exit %d, want 1: %s%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "spec.selector.volumes") || !strings.Contains(stderr, "nmae") {
		t.Errorf("stderr %q does not name spec.selector.volumes and the mistake", stderr)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing for a rejected policy", out)
	}
}

// Usage errors exit 2, so a CI job tells a wrong command line from a failed preview.
func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"preview"}, {"preview", "-f", "x", "-o", "wide"}, {"nope"}, {"run"}, {"coverage", "--bogus"}} {
		if _, stderr, code := holdfast(t, "", args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2: %s", args, code, stderr)
		}
	}
}

// wantLines fails unless out holds each of want (whitespace runs compared as one
// space).
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	norm := strings.Join(strings.Fields(out), " ")
	for _, w := range want {
		if !strings.Contains(norm, strings.Join(strings.Fields(w), " ")) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
