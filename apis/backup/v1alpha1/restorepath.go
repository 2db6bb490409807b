package v1alpha1

import (
	"fmt"
	"strings"
)

// Validate checks p by the rule the API server applies to a RestorePath (the
// XValidation rule on the type): not empty, no leading or trailing "/", and no empty,
// "." or ".." segment. It is for code that takes such a path from elsewhere than a
// stored object (a browse session, a CLI flag) and must refuse what the API refuses.
// The length bound stays the schema's (MaxLength), which callers set for themselves.
func (p RestorePath) Validate() error {
	s := string(p)
	if s == "" {
		return fmt.Errorf("the path is empty")
	}
	for _, seg := range strings.Split(s, "/") {
		switch seg {
		case "", ".", "..":
			return fmt.Errorf("path %q must be relative to the volume's root: no leading /, no trailing /, and no empty, . or .. segment", s)
		}
	}
	return nil
}
