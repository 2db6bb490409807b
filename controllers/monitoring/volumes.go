package monitoring

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// volumeKey is one protected volume: a source identity in a namespace, backed up by a
// policy ("" for PodVolumeBackups that no policy made).
type volumeKey struct {
	namespace, source, policy string
}

// volumeState is what the PodVolumeBackups of one volume say.
type volumeState struct {
	// newest is the newest PodVolumeBackup (by creation): its claim and location
	// label the volume's series.
	newest *v1.PodVolumeBackup
	// lastFinal and lastSuccess are the newest (by attempt time) that reached a final
	// phase, and that Completed.
	lastFinal, lastSuccess *v1.PodVolumeBackup
	// failures counts the final ones newer than lastSuccess that did not complete.
	failures int
}

// attemptTime is when a backup started, or was created if it never did.
func attemptTime(pvb *v1.PodVolumeBackup) time.Time {
	if pvb.Status.StartTime != nil {
		return pvb.Status.StartTime.Time
	}
	return pvb.CreationTimestamp.Time
}

// newer orders backups by a time, then by name so that ties are stable.
func newer(a, b *v1.PodVolumeBackup, at func(*v1.PodVolumeBackup) time.Time) bool {
	ta, tb := at(a), at(b)
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.Name > b.Name
}

func created(pvb *v1.PodVolumeBackup) time.Time { return pvb.CreationTimestamp.Time }

func isFinal(p v1.RunPhase) bool {
	return p == v1.RunCompleted || p == v1.RunFailed || p == v1.RunCanceled
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
		} else if newer(b, st.newest, created) {
			st.newest = b
		}
		if !isFinal(b.Status.Phase) {
			continue
		}
		if st.lastFinal == nil || newer(b, st.lastFinal, attemptTime) {
			st.lastFinal = b
		}
		if b.Status.Phase == v1.RunCompleted && (st.lastSuccess == nil || newer(b, st.lastSuccess, attemptTime)) {
			st.lastSuccess = b
		}
	}
	for i, b := range pvbs {
		if b.Status.Phase != v1.RunFailed && b.Status.Phase != v1.RunCanceled {
			continue
		}
		st := states[keys[i]]
		if st.lastSuccess == nil || newer(b, st.lastSuccess, attemptTime) {
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
		gauge(ch, d.volumeLastAttemptSuccess, metrics.Bool(st.lastFinal.Status.Phase == v1.RunCompleted), labels...)
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
