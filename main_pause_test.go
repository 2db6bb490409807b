package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPauseBlocksUntilSIGTERMAndExitsZero runs holdfast pause as the reader and writer
// pods run it (the real entry point, in a process of its own) and stops it as the
// kubelet does. It waits for the line pause writes once SIGTERM is caught, checks
// that the process is still there, then sends SIGTERM and expects exit 0.
func TestPauseBlocksUntilSIGTERMAndExitsZero(t *testing.T) {
	cmd := exec.Command(os.Args[0], "pause")
	cmd.Env = append(os.Environ(), "HOLDFAST_TEST_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// The readiness line. A process that exits closes the pipe and ends the scan; one
	// that never says it is ready is given up on after two minutes (a guard against a
	// hang, not a wait: the line comes in milliseconds).
	lines := bufio.NewScanner(stderr)
	ready := make(chan bool, 1)
	rest := make(chan string, 1)
	var seen []string
	go func() {
		for lines.Scan() {
			seen = append(seen, lines.Text())
			if lines.Text() == pauseReadyLine {
				ready <- true
				// The rest, read to the end so a write never blocks the child.
				b, _ := io.ReadAll(stderr)
				rest <- string(b)
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("holdfast pause ended its output (read error %v) without %q; output:\n%s", lines.Err(), pauseReadyLine, strings.Join(seen, "\n"))
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("holdfast pause did not say %q within two minutes", pauseReadyLine)
	}

	// It blocks: the process is still there, neither exited nor a zombie.
	if state, err := procState(cmd.Process.Pid); err != nil || state == "Z" || state == "X" {
		t.Fatalf("holdfast pause after its readiness line: state %q (%v), want it alive", state, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("holdfast pause on SIGTERM: %v (exit %d), want exit 0", err, exit.ExitCode())
		}
		if err != nil {
			t.Fatal(err)
		}
		// It ended because of the signal, not on its own before the signal came.
		if out, want := <-rest, "holdfast pause: terminated, exiting"; !strings.Contains(out, want) {
			t.Fatalf("holdfast pause exited 0 without saying %q: it did not wait for SIGTERM; output after ready:\n%s", want, out)
		}
	case <-time.After(time.Minute):
		// A guard against a hang, not a wait: a clean exit takes milliseconds.
		t.Fatal("holdfast pause did not exit within a minute of SIGTERM")
	}
}

// procState is the one-letter state of process pid from /proc/<pid>/stat (R, S, Z...).
func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// pid (comm) state ...: comm may hold spaces, so cut after its closing paren.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "", fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return s[i+2 : i+3], nil
}
