package agent

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// jobs tracks the data movements this agent process runs, so a reconcile can tell "in
// flight here" from "left InProgress by an agent that restarted", and can cancel one.
type jobs struct {
	mu       sync.Mutex
	running  map[types.NamespacedName]*job
	slots    *slots
	priority priority
	// locked is the work that found its repository locked, and when it may try again.
	locked map[types.NamespacedName]lockedWork
	// holding counts the jobs that hold a slot (the metrics' running jobs).
	holding int
}

// lockedWork is work put back to Pending because the repository stayed locked.
type lockedWork struct {
	attempts int
	until    time.Time
}

// maxLockedDoublings bounds the doubling of the wait after a lock: 16 times the first.
const maxLockedDoublings = 4

// lockedOut records that the work of key found its repository locked at now, and
// returns how long it waits before it is tried again: first, doubled each time up to
// 16 times first.
func (j *jobs) lockedOut(key types.NamespacedName, now time.Time, first time.Duration) time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	lw := j.locked[key]
	wait := first << min(lw.attempts, maxLockedDoublings)
	lw.attempts++
	lw.until = now.Add(wait)
	j.locked[key] = lw
	return wait
}

// lockWait is how long the work of key still waits after a lock (0: it may start).
func (j *jobs) lockWait(key types.NamespacedName, now time.Time) time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	return max(j.locked[key].until.Sub(now), 0)
}

// ended forgets the lock wait of work that finished or was deleted.
func (j *jobs) ended(key types.NamespacedName) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.locked, key)
}

type job struct {
	cancel context.CancelFunc
	podUID types.UID
	// reason is set when the agent, not the user, stops the job (the pod went away).
	reason string
}

// newJobs returns a registry whose jobs take a slot from slots, which the backup and
// restore registries share so the node's concurrency bound covers both; p says who
// gets a slot first.
func newJobs(s *slots, p priority) *jobs {
	return &jobs{running: map[types.NamespacedName]*job{}, slots: s, priority: p, locked: map[types.NamespacedName]lockedWork{}}
}

// start runs fn in a goroutine once a slot is free (fn runs with a canceled context
// when the job is stopped before, to record that); it returns false when a job with
// this key already runs. When fn returns true, again is called once the job is no
// longer registered, so that a reconcile it triggers can start the job anew.
func (j *jobs) start(parent context.Context, key types.NamespacedName, podUID types.UID, fn func(ctx context.Context, stopReason func() string) (retry bool), again func()) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[key]; ok {
		return false
	}
	ctx, cancel := context.WithCancel(parent)
	jb := &job{cancel: cancel, podUID: podUID}
	j.running[key] = jb
	go func() {
		retry := false
		defer func() {
			cancel()
			j.mu.Lock()
			delete(j.running, key)
			j.mu.Unlock()
			if retry && again != nil {
				again()
			}
		}()
		if j.slots.acquire(ctx, j.priority) {
			j.hold(1)
			defer func() { j.hold(-1); j.slots.release() }()
		}
		retry = fn(ctx, func() string {
			j.mu.Lock()
			defer j.mu.Unlock()
			return jb.reason
		})
	}()
	return true
}

func (j *jobs) hold(n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.holding += n
}

// counts says how many of these jobs hold a slot and how many wait for one.
func (j *jobs) counts() (running, queued int) {
	j.mu.Lock()
	running = j.holding
	j.mu.Unlock()
	j.slots.mu.Lock()
	defer j.slots.mu.Unlock()
	return running, len(j.slots.waiting[j.priority])
}

func (j *jobs) isRunning(key types.NamespacedName) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.running[key]
	return ok
}

// stop cancels a running job; reason is empty for a cancel the user asked for.
func (j *jobs) stop(key types.NamespacedName, reason string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if jb, ok := j.running[key]; ok {
		if jb.reason == "" {
			jb.reason = reason
		}
		jb.cancel()
	}
}

// forPod lists the running jobs that read or write a volume of the pod.
func (j *jobs) forPod(uid types.UID) []types.NamespacedName {
	j.mu.Lock()
	defer j.mu.Unlock()
	var keys []types.NamespacedName
	for k, jb := range j.running {
		if jb.podUID == uid {
			keys = append(keys, k)
		}
	}
	return keys
}

// priority orders the jobs waiting for a slot.
type priority int

const (
	// priorityRestore: a restore holds an application in restore-wait (or is what a
	// person waits for), so it takes the next free slot.
	priorityRestore priority = iota
	// priorityBackup: a backup holds nobody; it waits behind restores (review L7).
	priorityBackup
	priorities
)

// slots bound the jobs that move data at once on the node. A freed slot goes to the
// longest-waiting restore, then to the longest-waiting backup.
type slots struct {
	mu      sync.Mutex
	free    int
	waiting [priorities][]chan struct{}
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot, waiting for one; it returns false, holding none, when ctx ends
// first.
func (s *slots) acquire(ctx context.Context, p priority) bool {
	s.mu.Lock()
	if s.free > 0 && s.queuedAhead(p) == 0 {
		s.free--
		s.mu.Unlock()
		return true
	}
	granted := make(chan struct{})
	s.waiting[p] = append(s.waiting[p], granted)
	s.mu.Unlock()
	select {
	case <-granted:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.waiting[p] {
		if w == granted {
			s.waiting[p] = append(s.waiting[p][:i], s.waiting[p][i+1:]...)
			return false
		}
	}
	// Handed a slot just as ctx ended: pass it on.
	s.releaseLocked()
	return false
}

// queuedAhead counts the waiters that come before a new one of priority p.
func (s *slots) queuedAhead(p priority) int {
	n := 0
	for q := priority(0); q <= p; q++ {
		n += len(s.waiting[q])
	}
	return n
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *slots) releaseLocked() {
	for p := range s.waiting {
		if len(s.waiting[p]) > 0 {
			next := s.waiting[p][0]
			s.waiting[p] = s.waiting[p][1:]
			close(next)
			return
		}
	}
	s.free++
}

// queued counts the jobs waiting for a slot.
func (s *slots) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queuedAhead(priorities - 1)
}
