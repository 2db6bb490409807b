// Package restorewait is the restore-wait protocol: the init container that holds a pod
// until the agent has restored every volume and written its done-marker
// <restore-uid>.<volume> into the pod's marker volume (VolumeMarkerName; in pods
// admitted before the marker volume, .holdfast/<restore-uid>[.<pod-uid>] in each
// volume, see MarkerName), and the agent's side, which writes that marker so that
// nothing else in the pod can forge, hide or remove it (marker.go).
package restorewait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// MarkerDir is the directory, at the root of a restored volume, that holds the markers.
const MarkerDir = ".holdfast"

// FailedSuffix marks a restore the agent gave up on; the file holds the reason.
const FailedSuffix = ".failed"

// Options are what restore-wait waits for.
type Options struct {
	// Volumes are the mount paths of the volumes being restored, each at
	// MountPath(<volume name>).
	Volumes []string
	// MarkerDir, when set (FlagMarkerDir), is the marker volume: the markers of each
	// volume are there (VolumeMarkerName, named after the volume's base name), and
	// Wait opens none of the volumes. Without it Wait reads, and removes, the markers
	// in .holdfast at the root of each volume.
	MarkerDir string
	// RestoreUID is the UID of the VolumeRestore whose markers to wait for.
	RestoreUID string
	// PodUID, when set (from EnvPodUID), is the UID of the pod restore-wait holds: it
	// then waits for the markers of this pod only, <restore uid>.<pod uid>, which the
	// agent writes for each held pod mounting a restored claim, so that each pod on a
	// claim restored once removes only its own marker (MarkerName).
	PodUID string
	// Interval is how often the markers are looked for.
	Interval time.Duration
	// Deadline is how long Wait waits for every volume before it gives up with
	// ErrDeadline; 0 waits without a limit.
	Deadline time.Duration
	// Log receives one line when a volume is done and one every minute while waiting.
	Log io.Writer
}

// ErrDeadline is returned by Wait when the deadline passed before every volume was
// restored.
var ErrDeadline = errors.New("restore-wait deadline passed")

// Wait returns nil once every volume has its done-marker, after removing the markers
// that are in the volumes (so that the application sees only its data); those in the
// marker volume stay, for an init container that runs again. It returns an error as soon as a
// volume holds a failure marker, so the pod shows why instead of starting on missing
// data. Only markers the agent wrote count (see marker.go); anything else at their
// place is logged once and waited past. After opts.Deadline it gives up with an error
// that wraps ErrDeadline and names the volumes still waited for, so that a restore
// that never comes ends the init container rather than holding the pod for ever.
func Wait(ctx context.Context, opts Options) error {
	if len(opts.Volumes) == 0 {
		return errors.New("no --volume given: nothing to wait for")
	}
	if err := checkUID(opts.RestoreUID); err != nil {
		return err
	}
	if opts.PodUID != "" {
		if err := checkUID(opts.PodUID); err != nil {
			return fmt.Errorf("$%s: %w", EnvPodUID, err)
		}
	}
	for _, v := range opts.Volumes {
		if opts.MarkerDir == "" {
			break
		}
		if err := checkName(path.Base(v)); err != nil {
			return fmt.Errorf("--%s %s: %w", FlagVolume, v, err)
		}
	}
	markerOf := func(volume string) string {
		if opts.MarkerDir != "" {
			return VolumeMarkerName(opts.RestoreUID, path.Base(volume))
		}
		return MarkerName(opts.RestoreUID, opts.PodUID)
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Deadline < 0 {
		return fmt.Errorf("--%s %s is negative", FlagDeadline, opts.Deadline)
	}
	var deadline <-chan time.Time
	if opts.Deadline > 0 {
		timer := time.NewTimer(opts.Deadline)
		defer timer.Stop()
		deadline = timer.C
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
	told := map[string]bool{}
	for {
		for _, v := range opts.Volumes {
			if !pending[v] {
				continue
			}
			done, err := checkVolume(v, opts.MarkerDir, markerOf(v), func(why string) {
				if !told[v+why] {
					told[v+why] = true
					fmt.Fprintf(opts.Log, "restore-wait: ignoring what is in %s: %s\n", v, why)
				}
			})
			if err != nil {
				return err
			}
			if done {
				delete(pending, v)
				fmt.Fprintf(opts.Log, "restore-wait: %s restored\n", v)
			}
		}
		if len(pending) == 0 {
			if opts.MarkerDir == "" {
				removeMarkers(opts.Volumes, markerOf(""), opts.Log)
			}
			fmt.Fprintln(opts.Log, "restore-wait: every volume restored; starting the application")
			return nil
		}
		if time.Since(lastReport) >= time.Minute {
			fmt.Fprintf(opts.Log, "restore-wait: still waiting for %d volume(s)\n", len(pending))
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for %d volume(s): %w", len(pending), ctx.Err())
		case <-deadline:
			return fmt.Errorf("%w: gave up after %s waiting for restore %s into %s; `kubectl describe vr` in this namespace says why",
				ErrDeadline, opts.Deadline, opts.RestoreUID, strings.Join(pendingOf(opts.Volumes, pending), ", "))
		case <-ticker.C:
		}
	}
}

// checkVolume says whether the agent has marked the volume restored (the marker named
// marker, in markerDir or, when that is "", in the volume), and returns the agent's
// reason when it marked it failed. What the agent did not write is passed to ignore,
// and waited past.
func checkVolume(volume, markerDir, marker string, ignore func(why string)) (bool, error) {
	var st markerState
	var err error
	if markerDir != "" {
		st, err = readVolumeMarkers(markerDir, marker)
	} else {
		st, err = readMarkers(volume, marker)
	}
	if err != nil {
		if markerDir != "" {
			return false, fmt.Errorf("looking for the markers of %s: %w", volume, err)
		}
		return false, fmt.Errorf("looking for the markers in %s: %w", volume, err)
	}
	if st.ignored != "" {
		ignore(st.ignored)
	}
	if st.failed {
		return false, fmt.Errorf("the restore of %s failed: %s", volume, strings.TrimSpace(st.reason))
	}
	return st.done, nil
}

// removeMarkers removes this pod's done-markers (named marker), so that the volume the
// application sees holds only its data. A marker that cannot be removed is left, with
// a log line: the data is there, and a marker left behind names only this restore.
// Another pod's marker on a shared claim is left for that pod's restore-wait.
func removeMarkers(volumes []string, marker string, log io.Writer) {
	for _, v := range volumes {
		if err := removeMarker(v, marker); err != nil {
			fmt.Fprintf(log, "restore-wait: left the done-marker in %s: %v\n", v, err)
		}
	}
}

// pendingOf lists, in the order given, the volumes still waited for.
func pendingOf(volumes []string, pending map[string]bool) []string {
	var out []string
	for _, v := range volumes {
		if pending[v] {
			out = append(out, v)
		}
	}
	return out
}
