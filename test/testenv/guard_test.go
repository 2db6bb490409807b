package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envDieChild, when set, makes TestATestKilledLeavesNoControlPlane's child start a
// control plane, say so and wait to be killed.
const envDieChild = "HOLDFAST_TESTENV_DIE_CHILD"

// TestATestKilledLeavesNoControlPlane: a test binary killed with SIGKILL (as `go test
// -timeout` or a CI timeout ends it, without any cleanup) takes its etcd and
// kube-apiserver with it.
func TestATestKilledLeavesNoControlPlane(t *testing.T) {
	if os.Getenv(envDieChild) != "" {
		e, err := Start(Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("started", e.dir)
		select {} // until killed
	}
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	child := exec.Command(os.Args[0], "-test.run=^TestATestKilledLeavesNoControlPlane$", "-test.v=false")
	// As `make test` runs it: KUBEBUILDER_ASSETS names the unguarded binaries.
	child.Env = append(os.Environ(), envDieChild+"=1", "KUBEBUILDER_ASSETS="+ToolsBin())
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	dir, ok := strings.CutPrefix(strings.TrimSpace(line), "started ")
	if !ok {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("the child did not start a control plane: %q", line)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) }) // the child could not remove it
	plane := childrenOf(t, child.Process.Pid)
	if len(plane) < 2 {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("found %v below the child, want etcd and kube-apiserver", plane)
	}
	// The killed child cannot remove the directories envtest made for them (etcd's data,
	// the API server's certificates): their command lines name them.
	leftovers := envtestDirs(plane)
	t.Cleanup(func() { // whatever the outcome, this test leaves nothing running
		for _, p := range plane {
			if alive(p) {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		for _, d := range leftovers {
			_ = os.RemoveAll(d)
		}
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(time.Minute)
	for _, p := range plane {
		for alive(p) {
			if time.Now().After(deadline) {
				_, ppid, state, _ := readProc(p.pid)
				t.Fatalf("%s still runs a minute after its test process was killed (parent %d, state %s)", p, ppid, state)
			}
			time.Sleep(50 * time.Millisecond) // polls the kernel's process table for the condition
		}
	}
}

// proc is a process as /proc shows it: a pid can be reused once the process is gone
// (pid_max is 32768 here, and a CI run starts many processes), so a process is its pid
// and its start time.
type proc struct {
	pid   int
	name  string
	start string // field 22 of /proc/<pid>/stat, in clock ticks since boot
}

func (p proc) String() string { return fmt.Sprintf("%s (pid %d)", p.name, p.pid) }

// readProc reads pid's name, parent, state and start time; ok false when it is gone.
func readProc(pid int) (p proc, ppid int, state string, ok bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, 0, "", false
	}
	// pid (comm) state ppid ... : comm may hold spaces, so split after its ')'.
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return proc{}, 0, "", false
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 20 {
		return proc{}, 0, "", false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return proc{pid: pid, name: s[open+1 : end], start: fields[19]}, ppid, fields[0], true
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []proc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ppid, _, ok := readProc(n); ok && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// alive says whether p still runs: the same pid and start time, and not a zombie.
func alive(p proc) bool {
	now, _, state, ok := readProc(p.pid)
	return ok && now.start == p.start && state != "Z"
}

// envtestDirs are the temporary directories envtest made for the processes, from their
// command lines (--data-dir=, --cert-dir=, ... below the temporary directory).
func envtestDirs(procs []proc) []string {
	prefix := filepath.Join(os.TempDir(), "k8s_test_framework_")
	var out []string
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if i := strings.Index(arg, prefix); i >= 0 {
				dir := arg[i:]
				if j := strings.IndexByte(dir[len(prefix):], '/'); j >= 0 {
					dir = dir[:len(prefix)+j]
				}
				out = append(out, dir)
			}
		}
	}
	return out
}
