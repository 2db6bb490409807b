package mover

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGrace is how long a canceled child gets to stop cleanly (a kopia upload flushes
// what it has) before it is killed.
const StopGrace = 30 * time.Second

// Run starts cmd (a child running Serve), hands it job, reports its progress to
// onProgress and returns its result. Canceling ctx asks the child to stop with SIGTERM;
// the result then says Canceled. A child that dies without a result is an error that
// quotes the end of its log.
func Run(ctx context.Context, cmd *exec.Cmd, job Job, onProgress func(Progress), log func(line string)) (Result, error) {
	input, err := json.Marshal(job)
	if err != nil {
		return Result{}, err
	}
	cmd.Stdin = strings.NewReader(string(input))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return Result{}, err
	}
	// A mount namespace of its own: the child builds the jail in it (see Confine)
	// without changing the agent's view of the node.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Unshareflags: syscall.CLONE_NEWNS}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = StopGrace
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("starting the data mover: %w", err)
	}

	tail := &tailBuffer{max: 2048}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			tail.add(sc.Text())
			if log != nil {
				log(sc.Text())
			}
		}
	}()

	var result *Result
	dec := json.NewDecoder(stdout)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if !errors.Is(err, io.EOF) && result == nil {
				tail.add("unreadable output from the data mover: " + err.Error())
			}
			_, _ = io.Copy(io.Discard, stdout)
			break
		}
		if ev.Progress != nil && onProgress != nil {
			onProgress(*ev.Progress)
		}
		if ev.Result != nil {
			result = ev.Result
		}
	}
	wg.Wait()
	waitErr := cmd.Wait()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && log != nil {
		// The figure tells operators what a volume costs.
		peak, _ := PeakMemoryBytes(cmd.ProcessState)
		log(fmt.Sprintf("data mover exited: peak memory %d MiB, cpu %s user %s system",
			peak>>20, time.Duration(ru.Utime.Nano()).Round(time.Millisecond), time.Duration(ru.Stime.Nano()).Round(time.Millisecond)))
	}
	if result != nil {
		return *result, nil
	}
	if ctx.Err() != nil {
		return Result{Canceled: true}, nil
	}
	return Result{}, fmt.Errorf("the data mover exited without a result (%v): %s", waitErr, tail.String())
}

// tailBuffer keeps the last max bytes of a log.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []string
	n   int
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	t.n += len(line)
	for t.n > t.max && len(t.buf) > 1 {
		t.n -= len(t.buf[0])
		t.buf = t.buf[1:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == 0 {
		return "no log output"
	}
	return strings.Join(t.buf, " | ")
}

// PeakMemoryBytes is the peak resident memory of an exited data mover: its rusage
// maxrss, which Linux reports in KiB, keeps across the exec into the jail and takes
// the largest of the children it waited for (restic).
func PeakMemoryBytes(ps *os.ProcessState) (int64, bool) {
	if ps == nil {
		return 0, false
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, false
	}
	return ru.Maxrss * 1024, true
}
