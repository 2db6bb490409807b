package install

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// selectorLine finds `volumes: <CEL>` and `namespaces: <CEL>` in YAML blocks and in
// table cells of the docs.
var selectorLine = regexp.MustCompile("(?:^\\s*|`)(volumes|namespaces): (.+?)(?:`|$)")

// docExpressions returns every selector expression written in the given docs, by field.
func docExpressions(t *testing.T, docs ...string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, doc := range docs {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			for _, m := range selectorLine.FindAllStringSubmatch(line, -1) {
				expr := strings.TrimSpace(m[2])
				if strings.HasPrefix(expr, "'") || strings.HasPrefix(expr, `"`) {
					var s string
					if err := yaml.Unmarshal([]byte(expr), &s); err != nil {
						t.Fatalf("%s: %q is not a YAML string: %v", doc, expr, err)
					}
					expr = s
				}
				if expr == "" || expr == "|" || strings.HasPrefix(expr, "[{") {
					continue // a block scalar or a list of volumes, not an expression
				}
				out[m[1]] = append(out[m[1]], expr)
			}
		}
	}
	return out
}

// Every CEL selector shown in the docs compiles with the policy engine the manager
// uses: the same type checks, cost limits and error messages users get.
func TestDocumentedSelectorsCompile(t *testing.T) {
	engine, err := policy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	exprs := docExpressions(t, "migrating-from-velero.md", "concepts.md")
	if len(exprs["volumes"]) < 6 || len(exprs["namespaces"]) < 3 {
		t.Fatalf("found %d volume and %d namespace expressions in the docs; the extraction is broken", len(exprs["volumes"]), len(exprs["namespaces"]))
	}
	// Objects that set as little as possible: no labels, no annotations, no claim.
	bare := policy.Volume{
		Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		Pod:       &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"}},
		Volume:    &corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	for _, e := range exprs["volumes"] {
		sel, err := engine.Compile(v1.VolumeSelector{Volumes: e})
		if err != nil {
			t.Errorf("volumes: %s\n%v", e, err)
			continue
		}
		// An expression that fails on a pod without labels or annotations would
		// fail on most of a real cluster's pods.
		if _, err := sel.MatchVolume(bare, nil); err != nil {
			t.Errorf("volumes: %s fails on a pod without labels or annotations: %v", e, err)
		}
	}
	for _, e := range exprs["namespaces"] {
		if err := engine.Validate(v1.VolumeSelector{Namespaces: e}); err != nil {
			t.Errorf("namespaces: %s\n%v", e, err)
		}
	}
}

// The two expressions that replace Velero's annotations select what Velero would.
func TestVeleroAnnotationExpressions(t *testing.T) {
	engine, err := policy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	var optIn, optOut string
	for _, e := range docExpressions(t, "migrating-from-velero.md")["volumes"] {
		switch {
		case strings.Contains(e, `"backup.velero.io/backup-volumes"`):
			optIn = e
		case strings.Contains(e, `"backup.velero.io/backup-volumes-excludes"`):
			optOut = e
		}
	}
	if optIn == "" || optOut == "" {
		t.Fatal("the migration guide lacks the opt-in or the opt-out expression")
	}
	pod := func(annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop", Annotations: annotations}}
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	for _, tc := range []struct {
		name        string
		expr        string
		annotations map[string]string
		volume      string
		want        bool
	}{
		{"opt-in listed", optIn, map[string]string{"backup.velero.io/backup-volumes": "data,logs"}, "logs", true},
		{"opt-in not listed", optIn, map[string]string{"backup.velero.io/backup-volumes": "data,logs"}, "cache", false},
		{"opt-in no annotation", optIn, nil, "data", false},
		{"opt-out listed", optOut, map[string]string{"backup.velero.io/backup-volumes-excludes": "cache,tmp"}, "tmp", false},
		{"opt-out not listed", optOut, map[string]string{"backup.velero.io/backup-volumes-excludes": "cache,tmp"}, "data", true},
		{"opt-out no annotation", optOut, nil, "data", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := engine.Compile(v1.VolumeSelector{Volumes: tc.expr})
			if err != nil {
				t.Fatal(err)
			}
			vol := &corev1.Volume{Name: tc.volume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
			got, err := sel.MatchVolume(policy.Volume{Namespace: ns, Pod: pod(tc.annotations), Volume: vol}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("%s on volume %s with %v = %v, want %v", tc.expr, tc.volume, tc.annotations, got, tc.want)
			}
		})
	}
}
