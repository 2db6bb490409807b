package agent

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// jobs tracks the data movements this agent process runs, so a reconcile can tell "in
// flight here" from "left InProgress by an agent that restarted", and can cancel one.
type jobs struct {
	mu      sync.Mutex
	running map[types.NamespacedName]*job
	slots   chan struct{}
}

type job struct {
	cancel context.CancelFunc
	podUID types.UID
	// reason is set when the agent, not the user, stops the job (the pod went away).
	reason string
}

// newJobs returns a registry whose jobs take a slot from slots, which the backup and
// restore registries share so the node's concurrency bound covers both.
func newJobs(slots chan struct{}) *jobs {
	return &jobs{running: map[types.NamespacedName]*job{}, slots: slots}
}

// start runs fn in a goroutine once a slot is free; it returns false when a job with
// this key already runs.
func (j *jobs) start(parent context.Context, key types.NamespacedName, podUID types.UID, fn func(ctx context.Context, stopReason func() string)) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[key]; ok {
		return false
	}
	ctx, cancel := context.WithCancel(parent)
	jb := &job{cancel: cancel, podUID: podUID}
	j.running[key] = jb
	go func() {
		defer func() {
			cancel()
			j.mu.Lock()
			delete(j.running, key)
			j.mu.Unlock()
		}()
		select {
		case j.slots <- struct{}{}:
			defer func() { <-j.slots }()
		case <-ctx.Done():
		}
		fn(ctx, func() string {
			j.mu.Lock()
			defer j.mu.Unlock()
			return jb.reason
		})
	}()
	return true
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
