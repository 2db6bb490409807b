package metricnames

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// TestEveryMetricIsDocumented: docs/monitoring.md (or docs/coverage.md, for the
// coverage metrics) has a table row for every metric the code registers, and neither
// has one for a metric it does not.
func TestEveryMetricIsDocumented(t *testing.T) {
	names, err := All()
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, page := range []string{"monitoring.md", "coverage.md"} {
		doc, err := os.ReadFile("../../docs/" + page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile("(?m)^\\| `(holdfast_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
			documented[m[1]] = true
		}
	}
	for name := range names {
		if !documented[name] {
			t.Errorf("neither docs/monitoring.md nor docs/coverage.md has a table row for %s", name)
		}
	}
	for name := range documented {
		if _, ok := names[name]; !ok {
			t.Errorf("the docs document %s, which the code does not register", name)
		}
	}
	if len(documented) == 0 || !slices.ContainsFunc([]string{"holdfast_repository_size_bytes"}, func(n string) bool { return documented[n] }) {
		t.Errorf("found %d documented metrics", len(documented))
	}
}
