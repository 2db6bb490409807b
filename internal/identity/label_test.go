package identity

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestLabelValue(t *testing.T) {
	if got := LabelValue("nightly"); got != "nightly" {
		t.Errorf("LabelValue(nightly) = %q", got)
	}
	exact := strings.Repeat("a", 63)
	if got := LabelValue(exact); got != exact {
		t.Errorf("a 63-character name changed: %q", got)
	}
	seen := map[string]string{}
	for _, name := range []string{
		strings.Repeat("p", 253), strings.Repeat("p", 252) + "q", strings.Repeat("p", 64),
		strings.Repeat("a", 51) + "-.-.-" + strings.Repeat("b", 40), // the cut falls on dashes and dots
		"team-a.example.com-" + strings.Repeat("x", 80),
	} {
		got := LabelValue(name)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("LabelValue(%q) = %q is not a label value: %v", name, got, errs)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("%q and %q share the label value %q", name, other, got)
		}
		seen[got] = name
		if LabelValue(name) != got {
			t.Errorf("LabelValue(%q) is not stable", name)
		}
	}
}
