package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildHoldfast builds the holdfast binary into dir as `make build` does (static), for
// tests that run it as the product runs it: the agent's data mover re-executes itself
// inside a jail that holds no shared libraries.
func BuildHoldfast(dir string) (string, error) {
	out := filepath.Join(dir, "holdfast")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building holdfast: %w\n%s", err, b)
	}
	return out, nil
}
