package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

// TestMain doubles as the holdfast binary: with HOLDFAST_TEST_RUN_MAIN=1 the test binary
// runs main(), so the subcommand tests exercise the real entry point without a build.
func TestMain(m *testing.M) {
	if os.Getenv("HOLDFAST_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	testenv.Run(m, &env, testenv.Options{})
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, tc := range []struct {
		command string
		flags   []string
	}{
		{"manager", []string{"-metrics-bind-address", "-health-probe-bind-address", "-leader-elect", "-namespace", "-kubeconfig", "-zap-log-level"}},
		{"agent", []string{"-node-name", "$NODE_NAME", "-kubelet-root", "/var/lib/kubelet", "-health-probe-bind-address", "-namespace"}},
		{"restore-wait", []string{"-volume", "-restore-uid", "-marker-dir", "-poll-interval"}},
		{"recover", []string{"list", "password", "-location", "-credentials", "-identity", "-namespace", "-uploader", "-out-dir", "-stdout", "AWS_ACCESS_KEY_ID"}},
	} {
		t.Run(tc.command, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{tc.command, "--help"}, &stdout, &stderr); code != 0 {
				t.Fatalf("holdfast %s --help exited %d", tc.command, code)
			}
			for _, f := range tc.flags {
				if !strings.Contains(stderr.String(), f) {
					t.Errorf("holdfast %s --help does not mention %s:\n%s", tc.command, f, stderr.String())
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "restore-wait") {
		t.Errorf("no command: exit %d, output %q; want 2 and the usage", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"backup"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "backup"`) {
		t.Errorf("unknown command: exit %d, output %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"agent", "--kubelet-root", t.TempDir()}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "--node-name is required") {
		t.Errorf("agent without a node name: exit %d, output %q", code, stderr.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLongRunningCommandsStartCleanlyAndServeProbes starts manager and agent as
// processes against the real test API server, waits for /readyz, then stops them with
// SIGTERM as the kubelet does and expects a clean exit.
func TestLongRunningCommandsStartCleanlyAndServeProbes(t *testing.T) {
	env := testenv.Require(t, env)
	for _, tc := range []struct {
		command string
		args    []string
	}{
		{"manager", []string{"--namespace", "default"}},
		{"agent", []string{"--node-name", "node-1", "--kubelet-root", t.TempDir()}},
	} {
		t.Run(tc.command, func(t *testing.T) {
			probe := freeAddr(t)
			args := append([]string{tc.command, "--kubeconfig", env.Kubeconfig,
				"--health-probe-bind-address", probe, "--metrics-bind-address", "0"}, tc.args...)
			cmd := exec.Command(os.Args[0], args...)
			// The default work and cache directories are under $TMPDIR: the test's own.
			cmd.Env = append(os.Environ(), "HOLDFAST_TEST_RUN_MAIN=1", "TMPDIR="+t.TempDir())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					<-exited
				}
			})

			if err := waitReady(t.Context(), "http://"+probe+"/readyz", exited); err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out.String())
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("holdfast %s did not exit cleanly on SIGTERM: %v\noutput:\n%s", tc.command, err, out.String())
				}
			case <-time.After(time.Minute):
				t.Fatalf("holdfast %s did not stop within a minute of SIGTERM\noutput:\n%s", tc.command, out.String())
			}
		})
	}
}

// waitReady polls the readiness endpoint until it answers 200, the process exits, or
// two minutes pass (a loaded 2-core machine is slow, not broken).
func waitReady(ctx context.Context, url string, exited <-chan error) error {
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-deadline:
			return fmt.Errorf("%s never answered 200", url)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
