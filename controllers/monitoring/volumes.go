package monitoring

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// volumeKey is one protected volume: a source identity in a namespace, backed up by a
// policy ("" for PodVolumeBackups that no policy made).
type volumeKey struct {
	namespace, source, policy string
}

// volumeState is what the PodVolumeBackups of one volume say. All of it is ordered
// by newerBackup.
type volumeState struct {
	// newest is the newest PodVolumeBackup: its claim and location label the volume's
	// series.
	newest *v1.PodVolumeBackup
	// lastFinal is the newest that reached a final phase, lastSuccess the newest that
	// is good: Completed and not flagged FilesDropped.
	lastFinal, lastSuccess *v1.PodVolumeBackup
	// failures counts the final ones newer than lastSuccess that are not good.
	failures int
}

// attemptTime is when a backup started, or was created if it never did.
func attemptTime(pvb *v1.PodVolumeBackup) time.Time {
	if pvb.Status.StartTime != nil {
		return pvb.Status.StartTime.Time
	}
	return pvb.CreationTimestamp.Time
}

// newerBackup reports whether backup a of a volume is newer than b by the API
// server's clock (storage.BackupTime), as retention and restores order them: the
// agent writes status.startTime from its node's clock, and a node whose clock is
// off would otherwise put a backup before or after the wrong ones. Creation times have
// whole seconds; within one the start time decides, then the name, so that ties
// are stable.
func newerBackup(a, b *v1.PodVolumeBackup) bool {
	if ta, tb := storage.BackupTime(a), storage.BackupTime(b); !ta.Equal(tb) {
		return ta.After(tb)
	}
	if ta, tb := attemptTime(a), attemptTime(b); !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.Name > b.Name
}

func isFinal(p v1.RunPhase) bool {
	return p == v1.RunCompleted || p == v1.RunFailed || p == v1.RunCanceled
}

// isGood says whether a final backup counts as a success: it Completed and the
// manager did not flag it FilesDropped. A flagged one holds no or very few files
// (the volume was likely not mounted), retention and restores pass over it, so it
// neither ages the stale alert's clock nor ends a streak of failures: it is a
// failed attempt.
func isGood(pvb *v1.PodVolumeBackup) bool {
	if pvb.Status.Phase != v1.RunCompleted {
		return false
	}
	_, dropped := storage.DroppedFiles(pvb)
	return !dropped
}

// volumeStates groups backups by volume: one pass to find each volume's newest
// backups, one to count the failures since its newest success. O(backups).
func volumeStates(pvbs []*v1.PodVolumeBackup) map[volumeKey]*volumeState {
	states := map[volumeKey]*volumeState{}
	keys := make([]volumeKey, len(pvbs))
	for i, b := range pvbs {
		k := volumeKey{b.Namespace, b.Spec.SourcePath, identity.PolicyOfBackup(b)}
		keys[i] = k
		st := states[k]
		if st == nil {
			st = &volumeState{newest: b}
			states[k] = st
		} else if newerBackup(b, st.newest) {
			st.newest = b
		}
		if !isFinal(b.Status.Phase) {
			continue
		}
		if st.lastFinal == nil || newerBackup(b, st.lastFinal) {
			st.lastFinal = b
		}
		if isGood(b) && (st.lastSuccess == nil || newerBackup(b, st.lastSuccess)) {
			st.lastSuccess = b
		}
	}
	for i, b := range pvbs {
		if !isFinal(b.Status.Phase) || isGood(b) {
			continue
		}
		st := states[keys[i]]
		if st.lastSuccess == nil || newerBackup(b, st.lastSuccess) {
			st.failures++
		}
	}
	return states
}

// collectVolumes sends the per-volume series.
func (c *Collector) collectVolumes(ctx context.Context, ch chan<- prometheus.Metric) error {
	pvbs, err := c.listBackups(ctx)
	if err != nil {
		return err
	}
	var policies v1.VolumeBackupPolicyList
	if err := c.list(ctx, &policies); err != nil {
		return err
	}
	intervals := make(map[string]time.Duration, len(policies.Items))
	for i := range policies.Items {
		p := &policies.Items[i]
		if d := c.interval(p.Spec.Schedule); d > 0 {
			intervals[p.Name] = d
		}
	}
	d := &c.descs
	for k, st := range volumeStates(pvbs) {
		labels := []string{k.namespace, k.source, st.newest.Spec.ClaimName, k.policy, st.newest.Spec.StorageLocation}
		if interval, ok := intervals[k.policy]; ok {
			gauge(ch, d.volumeInterval, interval.Seconds(), labels...)
		}
		if st.lastFinal == nil {
			continue // only backups that have not ended yet
		}
		gauge(ch, d.volumeLastAttempt, metrics.Seconds(attemptTime(st.lastFinal)), labels...)
		gauge(ch, d.volumeLastAttemptSuccess, metrics.Bool(isGood(st.lastFinal)), labels...)
		gauge(ch, d.volumeConsecutiveFailures, float64(st.failures), labels...)
		s := st.lastSuccess
		if s == nil {
			continue
		}
		end := s.CreationTimestamp.Time
		if s.Status.CompletionTime != nil {
			end = s.Status.CompletionTime.Time
		}
		gauge(ch, d.volumeLastSuccess, metrics.Seconds(end), labels...)
		if s.Status.StartTime != nil && s.Status.CompletionTime != nil {
			gauge(ch, d.volumeDuration, s.Status.CompletionTime.Sub(s.Status.StartTime.Time).Seconds(), labels...)
		}
		gauge(ch, d.volumeBytes, float64(s.Status.Progress.TotalBytes), labels...)
		gauge(ch, d.volumeUploaded, float64(s.Status.BytesUploaded), labels...)
		gauge(ch, d.volumeFiles, float64(s.Status.Progress.TotalFiles), labels...)
	}
	return nil
}

// listBackups reads every PodVolumeBackup: from the informer's store once it has
// synced, else from the reader (which waits for the sync).
func (c *Collector) listBackups(ctx context.Context) ([]*v1.PodVolumeBackup, error) {
	if c.backups != nil {
		if pvbs, ok := c.backups.list(); ok {
			return pvbs, nil
		}
	}
	var list v1.PodVolumeBackupList
	if err := c.list(ctx, &list); err != nil {
		return nil, err
	}
	out := make([]*v1.PodVolumeBackup, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// scheduleKey is a schedule as far as its ticks go.
type scheduleKey struct{ cron, timeZone string }

// interval is a computed longest interval and when it was computed.
type interval struct {
	d  time.Duration
	at time.Time
}

// intervalTTL is how long a computed interval is used: a thousand cron ticks are
// computed once an hour per schedule, not on every scrape.
const intervalTTL = time.Hour

// interval is the longest interval of a schedule (0 without one, or when it does not
// parse: the policy is then Stalled, which its own metric says).
func (c *Collector) interval(s *v1.Schedule) time.Duration {
	if s == nil {
		return 0
	}
	now := c.opts.Now()
	k := scheduleKey{s.Cron, s.TimeZone}
	c.mu.Lock()
	defer c.mu.Unlock()
	if iv, ok := c.intervals[k]; ok && now.Sub(iv.at) < intervalTTL {
		return iv.d
	}
	d, err := policy.LongestInterval(s, now)
	if err != nil {
		d = 0
	}
	for key, iv := range c.intervals {
		if now.Sub(iv.at) >= intervalTTL {
			delete(c.intervals, key)
		}
	}
	c.intervals[k] = interval{d: d, at: now}
	return d
}
