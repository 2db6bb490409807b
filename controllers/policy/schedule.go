package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// maxMissedTicks bounds the search for the latest missed tick (a minutely schedule
// missed for a week is ~10,000 ticks; anything older counts from the bound).
const maxMissedTicks = 100_000

// cronSchedule is a parsed spec.schedule.
type cronSchedule struct {
	cron   cron.Schedule
	loc    *time.Location
	jitter time.Duration
}

// parseSchedule checks spec.schedule the way the webhook does; a nil schedule is nil.
func parseSchedule(s *v1.Schedule) (*cronSchedule, error) {
	if s == nil {
		return nil, nil
	}
	tz := s.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("spec.schedule.timeZone: unknown time zone %q: %w", tz, err)
	}
	if strings.HasPrefix(strings.TrimSpace(s.Cron), "@") || strings.Contains(s.Cron, "TZ=") {
		return nil, fmt.Errorf("spec.schedule.cron: %q: use five fields and spec.schedule.timeZone, not macros or TZ=", s.Cron)
	}
	sched, err := cron.ParseStandard(s.Cron)
	if err != nil {
		return nil, fmt.Errorf("spec.schedule.cron: %q: %w", s.Cron, err)
	}
	cs := &cronSchedule{cron: sched, loc: loc}
	if s.Jitter != nil {
		cs.jitter = s.Jitter.Duration
	}
	return cs, nil
}

// next is the first tick after t.
func (c *cronSchedule) next(t time.Time) time.Time {
	return c.cron.Next(t.In(c.loc)).UTC()
}

// maxIntervalTicks bounds the ticks shortestInterval looks at: a minutely schedule
// shows its interval in two ticks, a yearly one within a few.
const maxIntervalTicks = 1000

// shortestInterval is the shortest time between two consecutive ticks in the next
// maxIntervalTicks ticks (or the next four years) after from, in the schedule's time
// zone, so a daylight-saving day that shortens an interval counts. Zero when the
// schedule has fewer than two ticks there.
func (c *cronSchedule) shortestInterval(from time.Time) time.Duration {
	shortest, _ := c.intervals(from)
	return shortest
}

// intervals are the shortest and the longest time between two consecutive ticks in the
// next maxIntervalTicks ticks (or the next four years) after from; zero when the
// schedule has fewer than two ticks there.
func (c *cronSchedule) intervals(from time.Time) (shortest, longest time.Duration) {
	end := from.AddDate(4, 0, 0)
	prev := c.next(from)
	for i := 0; i < maxIntervalTicks && !prev.IsZero() && prev.Before(end); i++ {
		t := c.next(prev)
		if t.IsZero() {
			break
		}
		d := t.Sub(prev)
		if shortest == 0 || d < shortest {
			shortest = d
		}
		longest = max(longest, d)
		prev = t
	}
	return shortest, longest
}

// latestDue returns the latest tick in (after, now], and whether there is one. However
// many ticks were missed (the manager was down), a run starts once, for the latest.
func (c *cronSchedule) latestDue(after, now time.Time) (time.Time, bool) {
	var latest time.Time
	found := false
	for t, i := c.next(after), 0; !t.After(now) && !t.IsZero() && i < maxMissedTicks; t, i = c.next(t), i+1 {
		latest, found = t, true
	}
	return latest, found
}

// jitterOffset is the stable delay of one volume after a tick: a hash of the volume's
// source, so a volume starts at the same offset every run.
func jitterOffset(window time.Duration, namespace, sourcePath string) time.Duration {
	if window <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(namespace + "\x00" + sourcePath))
	return time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(window))
}
