package repository

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestKopiaBackupBoundsParallelReads: on a node with 64 CPUs a kopia backup reads
// maxUploadParallelism files at once, not one per CPU (kopia's default), and no more.
func TestKopiaBackupBoundsParallelReads(t *testing.T) {
	uploadCPUs = func() int { return 64 }
	t.Cleanup(func() { uploadCPUs = runtime.NumCPU })
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	files := map[string]string{}
	for i := range 4 * maxUploadParallelism {
		files[fmt.Sprintf("d%d/f%02d", i%2, i)] = fmt.Sprint("file ", i)
	}
	writeTree(t, src, files)

	// Every read waits until maxUploadParallelism-1 are waiting together (or, when
	// fewer readers exist, until the deadline), so that the peak is the number of
	// readers: kopia reads with a pool of ParallelUploads-1 workers, and the
	// goroutine walking the directory reads too when the pool is busy.
	var mu sync.Mutex
	reading, peak := 0, 0
	full := make(chan struct{})
	var fullOnce sync.Once
	deadline := make(chan struct{})
	time.AfterFunc(30*time.Second, func() { close(deadline) })
	beforeOpen = func(string) {
		mu.Lock()
		reading++
		peak = max(peak, reading)
		if reading == maxUploadParallelism-1 {
			fullOnce.Do(func() { close(full) })
		}
		mu.Unlock()
		select {
		case <-full:
		case <-deadline:
		}
		mu.Lock()
		reading--
		mu.Unlock()
	}
	t.Cleanup(func() { beforeOpen = nil })

	if _, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/parallel"}); err != nil {
		t.Fatal(err)
	}
	if peak < maxUploadParallelism-1 || peak > maxUploadParallelism {
		t.Errorf("the backup read %d files at once on 64 CPUs (%d here), want %d or %d", peak, runtime.NumCPU(), maxUploadParallelism-1, maxUploadParallelism)
	}
}

func TestUploadParallelism(t *testing.T) {
	for cpus, want := range map[int]int{0: 1, 1: 1, 2: 2, 8: 8, 9: 8, 64: 8} {
		if got := uploadParallelism(cpus); got != want {
			t.Errorf("uploadParallelism(%d) = %d, want %d", cpus, got, want)
		}
	}
}
