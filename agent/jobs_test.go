package agent

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestRestoresTakeTheNextFreeSlot is review L7: on a node busy with backups, a restore
// (which may hold an application in restore-wait) does not queue behind the backups
// that wait for a slot; it takes the next one that is freed.
func TestRestoresTakeTheNextFreeSlot(t *testing.T) {
	s := newSlots(1)
	backups, restores := newJobs(s, priorityBackup), newJobs(s, priorityRestore)
	ran := make(chan string, 10)
	release := make(chan struct{})
	run := func(j *jobs, name string, hold bool) {
		j.start(context.Background(), types.NamespacedName{Name: name}, types.UID(name), func(ctx context.Context, _ func() string) bool {
			ran <- name
			if hold {
				<-release
			}
			return false
		}, nil)
	}
	run(backups, "running-backup", true)
	if got := <-ran; got != "running-backup" {
		t.Fatalf("%s ran first", got)
	}
	for i := range 3 {
		run(backups, fmt.Sprintf("queued-backup-%d", i), false)
	}
	waitQueued(t, s, 3)
	run(restores, "restore", false)
	waitQueued(t, s, 4)
	close(release)
	if got := <-ran; got != "restore" {
		t.Errorf("the freed slot went to %s; want the restore, which waited behind 3 backups", got)
	}
	for range 3 {
		<-ran
	}
}

// TestAJobStoppedWhileQueuedGivesUpItsPlace: a job canceled while it waits runs at
// once (to record that it was canceled) and leaves the queue, and the slots still
// count right.
func TestAJobStoppedWhileQueuedGivesUpItsPlace(t *testing.T) {
	s := newSlots(1)
	backups := newJobs(s, priorityBackup)
	release := make(chan struct{})
	ran := make(chan string, 10)
	start := func(name string, hold bool) {
		backups.start(context.Background(), types.NamespacedName{Name: name}, "", func(ctx context.Context, _ func() string) bool {
			ran <- fmt.Sprintf("%s canceled=%v", name, ctx.Err() != nil)
			if hold {
				<-release
			}
			return false
		}, nil)
	}
	start("first", true)
	<-ran
	start("second", false)
	waitQueued(t, s, 1)
	backups.stop(types.NamespacedName{Name: "second"}, "the pod went away")
	if got := <-ran; got != "second canceled=true" {
		t.Errorf("stopped while queued: %s", got)
	}
	waitQueued(t, s, 0)
	close(release)
	start("third", false)
	if got := <-ran; got != "third canceled=false" {
		t.Errorf("after the first ended: %s", got)
	}
}

func waitQueued(t *testing.T, s *slots, n int) {
	t.Helper()
	if err := testenv.Poll(context.Background(), 30*time.Second, func() error {
		if q := s.queued(); q != n {
			return fmt.Errorf("%d queued, want %d", q, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Work that found its repository locked waits before it is tried again, twice as
// long each time up to 16 times the first wait; finished work forgets it.
func TestLockedWorkWaitsLongerEachTime(t *testing.T) {
	j := newJobs(newSlots(1), priorityBackup)
	key := types.NamespacedName{Namespace: "shop", Name: "nightly"}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if got := j.lockWait(key, now); got != 0 {
		t.Fatalf("work never locked waits %s", got)
	}
	var waits []time.Duration
	for range 6 {
		waits = append(waits, j.lockedOut(key, now, time.Minute))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 16 * time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	if got := j.lockWait(key, now.Add(10*time.Minute)); got != 6*time.Minute {
		t.Errorf("10 min after the last lock: waits %s, want 6m", got)
	}
	if got := j.lockWait(key, now.Add(time.Hour)); got != 0 {
		t.Errorf("an hour later: waits %s", got)
	}
	j.ended(key)
	if got := j.lockedOut(key, now, time.Minute); got != time.Minute {
		t.Errorf("after the work ended, the first wait is %s, want 1m", got)
	}
}
