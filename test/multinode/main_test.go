package multinode

// These tests start the real local cluster with two nodes, so they need root, the
// binaries of `make tools` and the packages of `make cluster-packages`. They are
// skipped only by -short; when a prerequisite is missing they fail and say which.

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-dev/holdfast/test/cluster"
	"github.com/holdfast-dev/holdfast/test/e2e"
	"github.com/holdfast-dev/holdfast/test/kustomize"
)

// StrandedWorkDeadline is the manager's --stranded-work-deadline in this package's
// install: short, so that the story of a node without an agent does not wait the
// default five minutes.
const StrandedWorkDeadline = 20 * time.Second

// suite is the package's one two-node cluster with Holdfast installed through an
// overlay of its own (writeOverlay).
var suite = newSuite()

func newSuite() *e2e.Suite {
	c := cluster.New(filepath.Join(os.TempDir(), "holdfast-multinode"))
	c.Nodes = 2
	var overlay string
	return &e2e.Suite{
		Name:    "multinode",
		Cluster: c,
		Prepare: func(func(string, ...any)) (func() error, error) {
			dir, err := os.MkdirTemp("", "holdfast-multinode-install-")
			if err != nil {
				return nil, err
			}
			overlay = dir
			undo := func() error { return os.RemoveAll(dir) }
			return undo, writeOverlay(dir)
		},
		Configure: func(e *e2e.Env) { e.Kustomization = overlay },
	}
}

func TestMain(m *testing.M) { suite.Main(m) }

// writeOverlay writes into dir the install of this package: kustomize/local with a
// short --stranded-work-deadline for the manager. The shared overlay stays as users
// and test/e2e have it.
func writeOverlay(dir string) error {
	_, err := kustomize.Overlay(dir, []string{"kustomize/local"}, nil, fmt.Sprintf(`patches:
- target:
    kind: Deployment
    name: holdfast-manager
  patch: |
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --stranded-work-deadline=%s
`, StrandedWorkDeadline))
	return err
}

func requireEnv(t *testing.T) *e2e.Env {
	t.Helper()
	return suite.Env(t)
}
