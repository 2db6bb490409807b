package bench

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary be the measuring wrapper, as the bench binary is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == MeasureFlag {
		os.Exit(MeasureMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestMeasuredProgramGetsItsOwnMountNamespace: mover.Run starts the wrapper in a
// mount namespace of its own, and the data mover's jail refuses to run in its
// parent's; so the wrapper must give the program one of its own too.
func TestMeasuredProgramGetsItsOwnMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace needs root")
	}
	report, err := reportFile()
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(report)
	cmd := measured(exec.Command("/bin/sh", "-c", `readlink /proc/self/ns/mnt /proc/$PPID/ns/mnt`), report)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // as mover.Run does
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ns := strings.Fields(string(out))
	if len(ns) != 2 || ns[0] == ns[1] {
		t.Errorf("the program's and the wrapper's mount namespaces: %q, want two different ones", ns)
	}
	if _, err := readReport(report); err != nil {
		t.Error(err)
	}
}
