package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The binary is the kubectl plugin when it runs as kubectl-holdfast (a link on PATH,
// which kubectl runs for kubectl holdfast) and under holdfast kubectl.
func TestKubectlPlugin(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "kubectl-holdfast")
	if err := os.Symlink(self, link); err != nil {
		t.Fatal(err)
	}
	plugin := func(args ...string) (string, int) {
		cmd := exec.Command(link, args...)
		cmd.Env = append(os.Environ(), "HOLDFAST_TEST_RUN_MAIN=1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := plugin("--help")
	if code != 0 || !strings.Contains(out, "kubectl holdfast [command]") || !strings.Contains(out, "preview") {
		t.Errorf("kubectl-holdfast --help: exit %d:\n%s", code, out)
	}
	if out, code := plugin("preview"); code != 2 || !strings.Contains(out, "-f FILE") {
		t.Errorf("kubectl-holdfast preview without input: exit %d, want 2 and the plugin's message:\n%s", code, out)
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"kubectl", "--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "holdfast kubectl [command]") {
		t.Errorf("holdfast kubectl --help: exit %d:\n%s%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "kubectl ") {
		t.Errorf("holdfast --help does not list kubectl:\n%s", stdout.String())
	}
}
