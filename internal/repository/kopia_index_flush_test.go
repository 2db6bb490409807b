package repository

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestKopiaBackupFlushesTheIndexAsFilesFinish: a first backup of many small files
// writes the index of its contents in parts while the upload runs, one every
// indexFlushFiles files, instead of holding it all in memory to the end of the write
// session; the snapshot restores as the volume was and the kopia CLI verifies it.
func TestKopiaBackupFlushesTheIndexAsFilesFinish(t *testing.T) {
	ctx := ctxFor(t)
	defer func(old int64) { indexFlushFiles = old }(indexFlushFiles)
	const nFiles, every = 1000, 100
	src := t.TempDir()
	files := map[string]string{}
	for i := range nFiles {
		// Distinct contents: each is a content of its own in the index.
		files[fmt.Sprintf("d%02d/f%04d.txt", i%20, i)] = fmt.Sprintf("file %d\n%s", i, strings.Repeat("holdfast ", i%200))
	}
	writeTree(t, src, files)

	// backup backs src up into a new filesystem repository and returns the
	// repository, where it is and how many index blobs the backup wrote.
	backup := func(flushEvery int64) (*kopiaRepository, Config, string, BackupResult, int) {
		t.Helper()
		indexFlushFiles = flushEvery
		store := t.TempDir()
		cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: store}}, v1.UploaderKopia, "small")
		if err := Initialize(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		rp, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rp.Close(context.Background()) })
		path := filepath.Join(store, cfg.location())
		before := indexBlobs(t, ctx, path)
		res, err := rp.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pod/app/data"})
		if err != nil {
			t.Fatal(err)
		}
		if res.TotalFiles != nFiles {
			t.Errorf("the backup counts %d files, the volume has %d", res.TotalFiles, nFiles)
		}
		return rp.(*kopiaRepository), cfg, path, res, indexBlobs(t, ctx, path) - before
	}

	// What a backup writes when it never flushes before the end of its write session.
	_, _, _, _, plain := backup(math.MaxInt64)
	r, cfg, path, res, flushed := backup(every)
	t.Logf("index blobs written by a backup of %d files: %d without flushing, %d flushing every %d files", nFiles, plain, flushed, every)
	// The end of the write session writes the last part either way: the others were
	// written while the upload ran.
	if flushed < plain+2 {
		t.Errorf("a backup flushing every %d of %d files wrote %d index blobs, one that does not flush %d: the index was not written in parts", every, nFiles, flushed, plain)
	}

	target := t.TempDir()
	rr, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
	if err != nil {
		t.Fatal(err)
	}
	if rr.TotalFiles != nFiles {
		t.Errorf("restored %d files, want %d", rr.TotalFiles, nFiles)
	}
	checkTree(t, target, files)
	cli := kopiaCLI(t, ctx, path, cfg.Password)
	cli("snapshot", "verify", "--verify-files-percent=100", res.SnapshotID)
}

// indexBlobs counts the index blobs of kopia's epoch format (`xn<epoch>_…`) in the
// filesystem repository at path.
func indexBlobs(t *testing.T, ctx context.Context, path string) int {
	t.Helper()
	st, err := filesystem.New(ctx, &filesystem.Options{Path: path}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	bms, err := blob.ListAllBlobs(ctx, st, "xn")
	if err != nil {
		t.Fatal(err)
	}
	return len(bms)
}

// failingFlush is a write session whose flushes fail, as when the store refuses the
// index blob.
type failingFlush struct {
	repo.RepositoryWriter
	err error
}

func (f failingFlush) Flush(context.Context) error { return f.err }

// TestIndexFlusherCancelsTheUploadWhenAFlushFails: a failed flush cancels the upload
// at once, flushes no more, and its error is what stopping the flusher returns.
func TestIndexFlusherCancelsTheUploadWhenAFlushFails(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia).(*kopiaRepository)
	storeFull := errors.New("the store is full")
	err := repo.WriteSession(ctx, r.rep, repo.WriteSessionOptions{Purpose: "test"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		cancelled := make(chan struct{})
		f := startIndexFlusher(ctx, failingFlush{w, storeFull}, 2, func() { close(cancelled) })
		defer f.stop()
		f.finished(1)
		f.finished(2)
		wait, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		select {
		case <-cancelled:
		case <-wait.Done():
			t.Fatal("the failed flush did not cancel the upload")
		}
		// Files that finish afterwards neither block nor flush again (a second
		// cancel would close cancelled twice).
		for n := int64(3); n <= 10; n++ {
			f.finished(n)
		}
		for range 2 {
			if err := f.stop(); !errors.Is(err, storeFull) {
				t.Errorf("stopping the flusher returned %v, want the flush's error", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
