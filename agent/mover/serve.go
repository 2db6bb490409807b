package mover

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Executor does the work of one job and reports progress through the callback, which
// may be called from many goroutines.
type Executor func(ctx context.Context, job Job, progress func(Progress)) (Result, error)

// Serve is the child side: it reads one Job from in, runs it with exec, writes a
// progress Event every interval and the result Event at the end. Canceling ctx (the
// child's SIGTERM) cancels the job. Serve returns an error only when it cannot talk to
// the parent; a failed job is a Result with Error set.
func Serve(ctx context.Context, in io.Reader, out io.Writer, exec Executor, interval time.Duration) error {
	var job Job
	if err := json.NewDecoder(in).Decode(&job); err != nil {
		return fmt.Errorf("reading the job: %w", err)
	}
	var (
		mu      sync.Mutex
		latest  Progress
		changed bool
		enc     = json.NewEncoder(out)
		encMu   sync.Mutex
	)
	emit := func(ev Event) error {
		encMu.Lock()
		defer encMu.Unlock()
		return enc.Encode(ev)
	}
	report := func(p Progress) {
		mu.Lock()
		latest, changed = p, true
		mu.Unlock()
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				p, c := latest, changed
				changed = false
				mu.Unlock()
				if c {
					_ = emit(Event{Progress: &p})
				}
			}
		}
	}()
	res, err := exec(ctx, job, report)
	close(stop)
	<-done
	switch {
	case ctx.Err() != nil && res.SnapshotID == "":
		// Whatever error the canceled work returned, the job stopped because it was asked to.
		res.Canceled, res.Error = true, ""
	case err != nil && res.Error == "":
		res.Error = err.Error()
		res.Reason = repository.ErrorReason(err)
	}
	return emit(Event{Result: &res})
}
