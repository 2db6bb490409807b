package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// lockedBuffer is a bytes.Buffer safe for the progress goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGetReportsProgress: a download prints how far it is, with the share of the
// total when the manager knows it (kopia; restic gives no directory sizes).
func TestGetReportsProgress(t *testing.T) {
	for _, c := range []struct {
		total int64
		want  string
	}{
		{total: 4 << 20, want: "data/2026: 1.0 MiB of 4.0 MiB (25%)"},
		{total: 0, want: "data/2026: 1.0 MiB\n"},
	} {
		var out lockedBuffer
		var done atomic.Int64
		b := &browseOptions{progress: time.Millisecond}
		stop := b.report(&out, "data/2026", c.total, &done)
		done.Store(1 << 20)
		if err := testenv.Poll(context.Background(), time.Minute, func() error {
			if !strings.Contains(out.String(), c.want) {
				return fmt.Errorf("no line %q in %q", c.want, out.String())
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		stop() // returns once the reporter has ended
	}
}
