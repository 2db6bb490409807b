package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-dev/holdfast/agent/jail"
)

// Sample is what one run of one tool cost, taken from the child process itself.
type Sample struct {
	Wall time.Duration
	// CPU is user + system time of the child (and of any children it waited for).
	CPU time.Duration
	// PeakRSS is the child's maximum resident set size in bytes.
	PeakRSS int64
	// Uploaded and Reused are what a Holdfast backup reported: the new bytes it sent
	// to the store, and the bytes of changed large files it took from the parent
	// snapshot. The CLIs leave them zero.
	Uploaded int64 `json:",omitempty"`
	Reused   int64 `json:",omitempty"`
}

// MeasureFlag, as the first argument of the bench binary, makes it the measuring
// wrapper (see MeasureMain).
const MeasureFlag = "-measure-exec"

// Linux counts the memory of the process that called exec in the new program's peak
// RSS, and Go starts children with vfork, which shares the parent's memory: a child
// of the bench process would report the bench's own RSS (hundreds of MiB) as its
// peak. So every measured program is started by a fresh, small copy of the bench
// binary (MeasureMain), whose own few MiB are the floor of every figure.
func measured(cmd *exec.Cmd, report string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	w := exec.CommandContext(context.Background(), self, append([]string{MeasureFlag, report, cmd.Path}, cmd.Args[1:]...)...)
	w.Env, w.Dir = cmd.Env, cmd.Dir
	return w
}

// MeasureMain is the wrapper: args are the report file, the program and its
// arguments. It runs the program with the wrapper's standard streams, forwards
// SIGTERM and SIGINT to it, writes its Sample as JSON to the report file and exits
// with its exit code.
func MeasureMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: "+MeasureFlag+" REPORT PROGRAM [ARG...]")
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if own, _ := jail.OwnMountNamespace(); own {
		// mover.Run started this wrapper in a mount namespace of its own, for the data
		// mover, whose jail refuses to run in its parent's namespace: the program gets
		// one of its own as it would from the agent.
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 127
	}
	go func() {
		for s := range sig {
			_ = cmd.Process.Signal(s)
		}
	}()
	_ = cmd.Wait()
	wall := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	raw, _ := json.Marshal(Sample{
		Wall:    wall,
		CPU:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		PeakRSS: ru.Maxrss * 1024, // Linux reports KiB
	})
	if err := os.WriteFile(args[0], raw, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 125
	}
	return cmd.ProcessState.ExitCode()
}

// reportFile is a fresh path for a wrapper's report.
func reportFile() (string, error) {
	f, err := os.CreateTemp("", "holdfast-bench-sample-")
	if err != nil {
		return "", err
	}
	f.Close()
	return f.Name(), nil
}

func readReport(path string) (Sample, error) {
	defer os.Remove(path)
	raw, err := os.ReadFile(path)
	if err != nil {
		return Sample{}, fmt.Errorf("reading the measurement: %w", err)
	}
	var s Sample
	if err := json.Unmarshal(raw, &s); err != nil {
		return Sample{}, fmt.Errorf("reading the measurement %s: %w", filepath.Base(path), err)
	}
	return s, nil
}

// runMeasured runs cmd to the end through the measuring wrapper. stdout is returned;
// on failure the error quotes the end of stderr.
func runMeasured(ctx context.Context, cmd *exec.Cmd) (Sample, []byte, error) {
	report, err := reportFile()
	if err != nil {
		return Sample{}, nil, err
	}
	w := measured(cmd, report)
	var stdout, stderr bytes.Buffer
	w.Stdout, w.Stderr = &stdout, &stderr
	w.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w.Cancel = func() error { return w.Process.Signal(syscall.SIGTERM) }
	w.WaitDelay = 30 * time.Second
	if err := w.Start(); err != nil {
		os.Remove(report)
		return Sample{}, nil, err
	}
	stopCancel := context.AfterFunc(ctx, func() { _ = w.Cancel() })
	err = w.Wait()
	stopCancel()
	if err != nil {
		os.Remove(report)
		return Sample{}, stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", cmd.Path, strings.Join(cmd.Args[1:], " "), err, tail(stderr.String(), 1500))
	}
	s, err := readReport(report)
	return s, stdout.Bytes(), err
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
