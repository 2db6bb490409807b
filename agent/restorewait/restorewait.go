// Package restorewait is the restore-wait init container: it holds a pod until the agent
// has restored every volume and written the done-marker .holdfast/<restore-uid> into it.
package restorewait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MarkerDir is the directory, at the root of a restored volume, that holds the markers.
const MarkerDir = ".holdfast"

// FailedSuffix marks a restore the agent gave up on; the file holds the reason.
const FailedSuffix = ".failed"

// MarkerPath is where the agent writes the done-marker of a restore into a volume.
func MarkerPath(volumeDir, restoreUID string) string {
	return filepath.Join(volumeDir, MarkerDir, restoreUID)
}

// Options are what restore-wait waits for.
type Options struct {
	// Volumes are the mount paths of the volumes being restored.
	Volumes []string
	// RestoreUID is the UID of the VolumeRestore whose markers to wait for.
	RestoreUID string
	// Interval is how often the markers are looked for.
	Interval time.Duration
	// Log receives one line when a volume is done and one every minute while waiting.
	Log io.Writer
}

// Wait returns nil once every volume holds its done-marker, after removing the markers
// (so a later restore into the same volume does not see a stale one). It returns an
// error as soon as a volume holds a failure marker, so the pod shows why instead of
// starting on missing data.
func Wait(ctx context.Context, opts Options) error {
	if len(opts.Volumes) == 0 {
		return errors.New("no --volume given: nothing to wait for")
	}
	if opts.RestoreUID == "" || strings.ContainsAny(opts.RestoreUID, `/\`) || opts.RestoreUID == "." || opts.RestoreUID == ".." {
		return fmt.Errorf("--restore-uid %q is not a UID", opts.RestoreUID)
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	pending := map[string]bool{}
	for _, v := range opts.Volumes {
		pending[v] = true
	}
	fmt.Fprintf(opts.Log, "restore-wait: waiting for restore %s into %d volume(s)\n", opts.RestoreUID, len(pending))

	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	lastReport := time.Now()
	for {
		for _, v := range opts.Volumes {
			if !pending[v] {
				continue
			}
			done, err := checkVolume(v, opts.RestoreUID)
			if err != nil {
				return err
			}
			if done {
				delete(pending, v)
				fmt.Fprintf(opts.Log, "restore-wait: %s restored\n", v)
			}
		}
		if len(pending) == 0 {
			return removeMarkers(opts.Volumes, opts.RestoreUID, opts.Log)
		}
		if time.Since(lastReport) >= time.Minute {
			fmt.Fprintf(opts.Log, "restore-wait: still waiting for %d volume(s)\n", len(pending))
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for %d volume(s): %w", len(pending), ctx.Err())
		case <-ticker.C:
		}
	}
}

func checkVolume(volume, uid string) (bool, error) {
	marker := MarkerPath(volume, uid)
	if msg, err := os.ReadFile(marker + FailedSuffix); err == nil {
		return false, fmt.Errorf("the restore of %s failed: %s", volume, strings.TrimSpace(string(msg)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("reading the failure marker in %s: %w", volume, err)
	}
	_, err := os.Lstat(marker)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("looking for the done-marker in %s: %w", volume, err)
	}
}

func removeMarkers(volumes []string, uid string, log io.Writer) error {
	for _, v := range volumes {
		if err := os.Remove(MarkerPath(v, uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the done-marker in %s: %w", v, err)
		}
		// Leave the directory when another restore's marker is still in it.
		_ = os.Remove(filepath.Join(v, MarkerDir))
	}
	fmt.Fprintln(log, "restore-wait: every volume restored; starting the application")
	return nil
}
