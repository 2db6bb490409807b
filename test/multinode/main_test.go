package multinode

// These tests start the real local cluster with two nodes, so they need root, the
// binaries of `make tools` and the packages of `make cluster-packages`. They are
// skipped only by -short; when a prerequisite is missing they fail and say which.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

// env is the package's one two-node cluster with Holdfast installed; setupErr says why
// there is none. tearDown removes it, once: TestStories calls it from a cleanup (which
// runs even when a story panics), TestMain after the tests.
var (
	env          *e2e.Env
	setupErr     error
	teardownOnce sync.Once
	teardownFn   func() error
	teardownErr  error
)

func tearDown() error {
	teardownOnce.Do(func() {
		if teardownFn != nil {
			teardownErr = teardownFn()
		}
	})
	return teardownErr
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	c := cluster.New(filepath.Join(os.TempDir(), "holdfast-multinode"))
	c.Nodes = 2
	c.Log = logf
	var teardown func() error
	env, teardown, setupErr = setUp(c, logf)
	if teardown != nil {
		teardownFn = func() error {
			start := time.Now()
			if err := teardown(); err != nil {
				fmt.Fprintf(os.Stderr, "multinode: teardown: %v\n", err)
				return err
			}
			logf("multinode: cluster down, nothing left behind (%.1fs)", time.Since(start).Seconds())
			return nil
		}
	}
	code := m.Run()
	if tearDown() != nil {
		code = 1
	}
	return code
}

// setUp waits for the cluster lock (test/e2e, test/install and test/cluster may hold
// it for a while under `make test`; that wait is outside go test's -timeout, which
// starts with the tests), brings up two nodes and installs Holdfast. Whatever it
// started, the returned teardown removes, also when it fails half way.
func setUp(c *cluster.Cluster, logf func(string, ...any)) (*e2e.Env, func() error, error) {
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Errorf("the multi-node tests need root to run the local cluster (mounts, network namespaces, cgroups)")
	}
	unlock, err := lock(logf)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if st := cluster.New("").Status(ctx); len(st.Components) > 0 {
		unlock()
		return nil, nil, fmt.Errorf("a local cluster is up in %s (%s); `make cluster-down` first", cluster.DefaultStateDir(), st.Detail)
	}
	if _, err := os.Stat(c.KubeletRoot); err == nil {
		unlock()
		return nil, nil, fmt.Errorf("%s exists before the test started a kubelet; remove it (no kubelet may run here)", c.KubeletRoot)
	}
	if err := e2e.PrepareBackupsDir(logf); err != nil {
		unlock()
		return nil, nil, err
	}
	overlay, err := os.MkdirTemp("", "holdfast-multinode-install-")
	if err != nil {
		unlock()
		return nil, nil, err
	}
	teardown := func() error {
		defer unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return errors.Join(e2e.Teardown(ctx, c), os.RemoveAll(overlay))
	}
	if err := writeOverlay(overlay); err != nil {
		return nil, teardown, err
	}
	start := time.Now()
	if err := c.Up(ctx); err != nil {
		return nil, teardown, fmt.Errorf("cluster up: %w (run `make tools cluster-packages` if something is missing)", err)
	}
	e, err := e2e.NewEnv(c, logf, func(title, out string) { logf("%s\n%s", title, out) })
	if err != nil {
		return nil, teardown, err
	}
	e.Kustomization = overlay
	if err := e.Install(ctx); err != nil {
		return nil, teardown, err
	}
	logf("multinode: two nodes up and Holdfast installed in %.1fs", time.Since(start).Seconds())
	return e, teardown, nil
}

// lock takes the machine-wide cluster lock, however long the other cluster tests of
// `make test` hold it (cluster.Lock gives up after 30 minutes; an hour is allowed).
func lock(logf func(string, ...any)) (func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	for {
		unlock, err := cluster.Lock(ctx)
		if err == nil {
			if waited := time.Since(start); waited > time.Second {
				logf("multinode: waited %.0fs for the cluster lock", waited.Seconds())
			}
			return unlock, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
}

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
	if testing.Short() {
		t.Skip("starts a real two-node cluster and installs Holdfast (a few minutes); skipped by -short")
	}
	if setupErr != nil {
		t.Fatalf("no cluster: %v", setupErr)
	}
	return env
}
