package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-dev/holdfast/test/cluster"
)

// Suite is a test package's one cluster with Holdfast installed, for stories told in
// order: Main brings it up from TestMain and tears it down after the tests, also when
// setting up failed half way; Env hands it to a test. Both test/e2e and
// test/multinode run on one.
type Suite struct {
	// Name starts the suite's log lines ("e2e", "multinode").
	Name string
	// Cluster is the cluster to bring up (its state directory, its nodes).
	Cluster *cluster.Cluster
	// Prepare runs with the cluster lock held, before the cluster starts; it returns
	// what teardown must undo of it (nil for nothing).
	Prepare func(logf func(string, ...any)) (undo func() error, err error)
	// Configure adjusts the Env before Holdfast is installed (its Kustomization).
	Configure func(*Env)

	env      *Env
	setupErr error
	once     sync.Once
	down     func() error
	downErr  error
}

// Logf writes a line of the suite's log, with the time.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// Main is the body of TestMain: it sets the suite up (unless -short), runs the tests
// and tears the suite down, and exits with the tests' code (1 when teardown failed).
func (s *Suite) Main(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	s.Cluster.Log = Logf
	var teardown func() error
	s.env, teardown, s.setupErr = s.setUp()
	if teardown != nil {
		s.down = func() error {
			start := time.Now()
			if err := teardown(); err != nil {
				fmt.Fprintf(os.Stderr, "%s: teardown: %v\n", s.Name, err)
				return err
			}
			Logf("%s: cluster down, nothing left behind (%.1fs)", s.Name, time.Since(start).Seconds())
			return nil
		}
	}
	code := m.Run()
	if s.TearDown() != nil {
		code = 1
	}
	os.Exit(code)
}

// Env is the suite's cluster, or fails the test saying why there is none; -short
// skips it.
func (s *Suite) Env(t *testing.T) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real cluster and installs Holdfast (a few minutes); skipped by -short")
	}
	if s.setupErr != nil {
		t.Fatalf("no cluster: %v", s.setupErr)
	}
	return s.env
}

// SetEnv replaces the suite's Env: a story that brought up a new cluster in the same
// state directory hands it to the stories after it.
func (s *Suite) SetEnv(e *Env) { s.env = e }

// TearDown removes the cluster, once: a story calls it from a cleanup (which runs even
// when it panics, unlike the end of TestMain), Main after the tests.
func (s *Suite) TearDown() error {
	s.once.Do(func() {
		if s.down != nil {
			s.downErr = s.down()
		}
	})
	return s.downErr
}

// setUp waits for the cluster lock, checks that no other cluster or kubelet runs,
// brings the cluster up and installs Holdfast. Whatever it started, the returned
// teardown removes, also when it fails half way.
func (s *Suite) setUp() (*Env, func() error, error) {
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Errorf("the %s tests need root to run the local cluster (mounts, network namespaces, cgroups)", s.Name)
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	fail := func(err error) (*Env, func() error, error) {
		unlock()
		return nil, nil, err
	}
	if st := cluster.New("").Status(ctx); len(st.Components) > 0 {
		return fail(fmt.Errorf("a local cluster is up in %s (%s); `make cluster-down` first", cluster.DefaultStateDir(), st.Detail))
	}
	if _, err := os.Stat(s.Cluster.KubeletRoot); err == nil {
		return fail(fmt.Errorf("%s exists before the test started a kubelet; remove it (no kubelet may run here)", s.Cluster.KubeletRoot))
	}
	if err := PrepareBackupsDir(Logf); err != nil {
		return fail(err)
	}
	var undo func() error
	if s.Prepare != nil {
		if undo, err = s.Prepare(Logf); err != nil {
			if undo != nil {
				err = errors.Join(err, undo())
			}
			return fail(err)
		}
	}
	c := s.Cluster
	teardown := func() error {
		defer unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		err := Teardown(ctx, c)
		if undo != nil {
			err = errors.Join(err, undo())
		}
		return err
	}
	start := time.Now()
	if err := c.Up(ctx); err != nil {
		return nil, teardown, fmt.Errorf("cluster up: %w (run `make tools cluster-packages` if something is missing)", err)
	}
	e, err := NewEnv(c, Logf, func(title, out string) { Logf("%s\n%s", title, out) })
	if err != nil {
		return nil, teardown, err
	}
	if s.Configure != nil {
		s.Configure(e)
	}
	if err := e.Install(ctx); err != nil {
		return nil, teardown, err
	}
	Logf("%s: %d node(s) up and Holdfast installed in %.1fs", s.Name, len(c.NodeList()), time.Since(start).Seconds())
	return e, teardown, nil
}

// lock takes the machine-wide cluster lock, however long the other cluster tests of
// `make test` hold it: cluster.Lock gives up after 30 minutes, a suite waits up to an
// hour. The wait is outside go test's -timeout, which starts with the tests.
func (s *Suite) lock() (func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	for {
		unlock, err := cluster.Lock(ctx)
		if err == nil {
			if waited := time.Since(start); waited > time.Second {
				Logf("%s: waited %.0fs for the cluster lock", s.Name, waited.Seconds())
			}
			return unlock, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
}
