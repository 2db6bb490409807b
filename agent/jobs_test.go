package agent

import (
	"context"
	"fmt"
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
