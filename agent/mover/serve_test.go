package mover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-dev/holdfast/internal/repository"
)

// The result of a failed job carries the kind of a repository error, so the agent can
// tell a repository that stayed locked (try again later) from a failure (review M11).
func TestServePassesTheRepositoryErrorKind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		reason string
	}{
		{"locked", fmt.Errorf("backing up: %w", repository.ErrLocked), "RepositoryLocked"},
		{"wrong key", repository.ErrWrongKey, "WrongKey"},
		{"not a repository error", errors.New("disk on fire"), ""},
	} {
		var out bytes.Buffer
		exec := func(context.Context, Job, func(Progress)) (Result, error) { return Result{}, tc.err }
		if err := Serve(context.Background(), strings.NewReader(`{"kind":"backup"}`), &out, exec, time.Hour); err != nil {
			t.Fatal(err)
		}
		var ev Event
		if err := json.Unmarshal(out.Bytes(), &ev); err != nil || ev.Result == nil {
			t.Fatalf("%s: output %q: %v", tc.name, out.String(), err)
		}
		if ev.Result.Reason != tc.reason || ev.Result.Error != tc.err.Error() {
			t.Errorf("%s: result %+v, want reason %q and error %q", tc.name, *ev.Result, tc.reason, tc.err.Error())
		}
	}
}
