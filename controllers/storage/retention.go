package storage

import (
	"fmt"
	"sort"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// RetentionCandidate is one completed backup of one source.
type RetentionCandidate struct {
	Name string
	Time time.Time
	// Orphan marks a snapshot that no PodVolumeBackup records. Its time is the
	// snapshot's own (sub-second) start, a PodVolumeBackup's is its creation (whole
	// seconds): within one second, the recorded backup counts as the newer.
	Orphan bool
}

// newerThan orders candidates newest first: by time at one-second resolution, then
// a recorded backup before an orphan snapshot, then by exact time, then by name.
func (c RetentionCandidate) newerThan(o RetentionCandidate) bool {
	if ts, to := c.Time.Truncate(time.Second), o.Time.Truncate(time.Second); !ts.Equal(to) {
		return ts.After(to)
	}
	if c.Orphan != o.Orphan {
		return !c.Orphan
	}
	if !c.Time.Equal(o.Time) {
		return c.Time.After(o.Time)
	}
	return c.Name > o.Name
}

// Expired returns the names of the backups that retention r does not keep. A backup
// is kept when any rule keeps it: keepLast keeps the newest N; keepHourly (Daily,
// Weekly, Monthly, Yearly) keeps the newest backup of each of the newest N hours (days,
// ISO weeks, months, years) that have one. Periods are in UTC.
func Expired(backups []RetentionCandidate, r v1.Retention) []string {
	sorted := append([]RetentionCandidate(nil), backups...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].newerThan(sorted[j]) })
	keep := make([]bool, len(sorted))
	for i := range sorted {
		if i < int(r.KeepLast) {
			keep[i] = true
		}
	}
	rules := []struct {
		n      int32
		period func(time.Time) string
	}{
		{r.KeepHourly, func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{r.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{r.KeepWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{r.KeepMonthly, func(t time.Time) string { return t.Format("2006-01") }},
		{r.KeepYearly, func(t time.Time) string { return t.Format("2006") }},
	}
	for _, rule := range rules {
		if rule.n <= 0 {
			continue
		}
		last, kept := "", int32(0)
		for i, b := range sorted {
			if kept == rule.n {
				break
			}
			if p := rule.period(b.Time.UTC()); p != last {
				keep[i] = true
				last = p
				kept++
			}
		}
	}
	var expired []string
	for i, b := range sorted {
		if !keep[i] {
			expired = append(expired, b.Name)
		}
	}
	sort.Strings(expired)
	return expired
}

// GuardAllows says whether expiring `expiring` of `total` backups of one source stays
// within maxPercent (0 means the API default, 50).
func GuardAllows(total, expiring int, maxPercent int32) bool {
	if maxPercent <= 0 {
		maxPercent = 50
	}
	return expiring*100 <= int(maxPercent)*total
}
