package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

var fence = regexp.MustCompile("(?s)```(cel|yaml)\n(.*?)```")

// TestDocExamples compiles every CEL snippet and every policy manifest of
// docs/policies.md with the strict (admission) environment.
func TestDocExamples(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "policies.md"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	examples := 0
	for _, m := range fence.FindAllStringSubmatch(string(raw), -1) {
		lang, body := m[1], dedent(m[2])
		switch lang {
		case "cel":
			expr := strings.TrimSpace(body)
			// A snippet that only reads `namespace` can be either expression; the
			// volume environment has every variable, so it checks both kinds.
			if err := e.Validate(v1.VolumeSelector{Volumes: expr}); err != nil {
				t.Errorf("example %q: %v", expr, err)
			}
			if !strings.Contains(expr, "pod.") && !strings.Contains(expr, "volume.") && !strings.Contains(expr, "pvc") {
				if err := e.Validate(v1.VolumeSelector{Namespaces: expr}); err != nil {
					t.Errorf("namespace example %q: %v", expr, err)
				}
			}
		case "yaml":
			var p v1.VolumeBackupPolicy
			if err := yaml.UnmarshalStrict([]byte(body), &p); err != nil {
				t.Errorf("manifest does not parse: %v\n%s", err, body)
				continue
			}
			if err := e.Validate(p.Spec.Selector); err != nil {
				t.Errorf("manifest %s: %v", p.Name, err)
			}
			if p.Spec.Coverage != nil {
				if err := e.ValidateExclusion(p.Spec.Coverage.Exclude); err != nil {
					t.Errorf("manifest %s: %v", p.Name, err)
				}
			}
			for i, h := range p.Spec.Hooks {
				if err := e.ValidateHookPods(HookPodsField(i), h.Pods); err != nil {
					t.Errorf("manifest %s: %v", p.Name, err)
				}
			}
		}
		examples++
	}
	if examples < 12 {
		t.Errorf("found %d examples in docs/policies.md, want at least 12 (the ten numbered ones and the manifests)", examples)
	}
}

// dedent removes the indentation of a code block nested in a list item.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " "))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	for i, l := range lines {
		if len(l) >= indent && indent > 0 {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}
