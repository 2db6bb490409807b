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
	child.Env = append(os.Environ(), envDieChild+"=1")
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
	t.Cleanup(func() { // whatever the outcome, this test leaves nothing running
		for pid := range plane {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(time.Minute)
	for pid, name := range plane {
		for alive(pid, name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) still runs a minute after its test process was killed", name, pid)
			}
			time.Sleep(50 * time.Millisecond) // polls the kernel's process table for the condition
		}
	}
}

// childrenOf maps the pids of the processes whose parent is pid to their names.
func childrenOf(t *testing.T, pid int) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var name string
		var ppid int
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "Name:\t"); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(l, "PPid:\t"); ok {
				ppid, _ = strconv.Atoi(v)
			}
		}
		if ppid == pid {
			out[p] = name
		}
	}
	return out
}

// alive says whether pid still runs the program name (not a zombie, not a reused pid).
func alive(pid int, name string) bool {
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return false
	}
	s := string(status)
	return strings.Contains(s, "Name:\t"+name+"\n") && !strings.Contains(s, "State:\tZ")
}
