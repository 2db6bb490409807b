package restore

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// endCounter counts each VolumeRestore that ends once (holdfast_restores_total and
// holdfast_restore_duration_seconds): on the status write of this process that took it
// from a running phase to a final one. A restore that was already final when it was
// read (a manager restart, a re-reconcile) is not counted again. The write is a merge
// patch read from the cache, so a reconcile that runs before the cache shows the
// write repeats it; the UIDs counted in the last hour keep that from counting twice.
type endCounter struct {
	mu      sync.Mutex
	counted map[types.UID]time.Time
}

// endCounterMemory is how long a counted restore is remembered: far longer than the
// cache takes to show a status write.
const endCounterMemory = time.Hour

// observe counts vr when its status went from before (as read) to a final phase, now
// that the write landed, and reports whether it did.
func (c *endCounter) observe(before v1.RestorePhase, vr *v1.VolumeRestore, now time.Time) bool {
	if before.IsFinal() || !vr.Status.Phase.IsFinal() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counted == nil {
		c.counted = map[types.UID]time.Time{}
	}
	if _, ok := c.counted[vr.UID]; ok {
		return false
	}
	for uid, t := range c.counted {
		if now.Sub(t) > endCounterMemory {
			delete(c.counted, uid)
		}
	}
	c.counted[vr.UID] = now
	outcome := string(vr.Status.Phase)
	metrics.Restores.WithLabelValues(vr.Namespace, outcome).Inc()
	end := now
	if vr.Status.CompletionTime != nil {
		end = vr.Status.CompletionTime.Time
	}
	metrics.RestoreDurations.WithLabelValues(outcome).Observe(end.Sub(vr.CreationTimestamp.Time).Seconds())
	return true
}
