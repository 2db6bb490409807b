package repository

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/restore"
	"github.com/kopia/kopia/snapshot/snapshotfs"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/confinedfs"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// cachedContentBytes is how much data kopia keeps in its data cache under dir.
func cachedContentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(dir, "contents"), func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") { // .shards describes the layout
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// largeFilesSnapshot backs up three 1 MiB files of random data (no small file, so no
// pack is prefetched into the cache) and returns the snapshot, the tree and the
// repository opened again with an empty cache directory, as the agent opens it for a
// restore.
func largeFilesSnapshot(t *testing.T) (string, map[string]string, *kopiaRepository, string) {
	t.Helper()
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, v1.UploaderKopia, "big")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, name := range []string{"a.bin", "db/b.bin", "db/c.bin"} {
		files[name] = randomText(t, 1<<20)
	}
	src := t.TempDir()
	writeTree(t, src, files)
	backup, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := backup.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/big"})
	if err != nil {
		t.Fatal(err)
	}
	if err := backup.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.CacheDir = t.TempDir()
	r, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return snap.SnapshotID, files, r.(*kopiaRepository), cfg.CacheDir
}

// TestKopiaRestoreReadsLargeFilesPastTheCache: a restore reads files above the small
// file size straight from the store, so none of their data lands in kopia's cache.
func TestKopiaRestoreReadsLargeFilesPastTheCache(t *testing.T) {
	id, files, r, cacheDir := largeFilesSnapshot(t)
	target := t.TempDir()
	res, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: target})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, target, files)
	if res.TotalBytes != 3<<20 || res.TotalFiles != 3 {
		t.Errorf("restored %d bytes in %d files, want %d in 3", res.TotalBytes, res.TotalFiles, 3<<20)
	}
	if n := cachedContentBytes(t, cacheDir); n != 0 {
		t.Errorf("the restore left %d bytes of file data in kopia's cache, want none", n)
	}
}

// TestKopiaRestoreFallsBackToTheCache: when the store cannot be opened a second time
// for uncached reads, every file is read through the cached repository and the
// restore still succeeds; Err says why.
func TestKopiaRestoreFallsBackToTheCache(t *testing.T) {
	ctx := ctxFor(t)
	id, files, r, cacheDir := largeFilesSnapshot(t)
	man, err := snapshot.LoadSnapshot(ctx, r.rep, manifest.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	root, err := snapshotfs.SnapshotRoot(r.rep, man)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	w, err := confinedfs.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	direct := kopiarestore.NewDirectReads(r.rep, func(context.Context) (blob.Storage, error) {
		return nil, errors.New("the store refuses a second connection")
	})
	defer direct.Close(ctx)
	out := kopiarestore.New(w).WithDirectReads(direct)
	if _, err := restore.Entry(ctx, r.rep, out, root, restore.Options{Parallel: 2, RestoreDirEntryAtDepth: math.MaxInt32}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	checkTree(t, target, files)
	if err := direct.Err(); err == nil || !strings.Contains(err.Error(), "refuses a second connection") {
		t.Errorf("Err() = %v, want the store's error", err)
	}
	if n := cachedContentBytes(t, cacheDir); n < 3<<20 {
		t.Errorf("kopia's cache holds %d bytes, want the 3 MiB read through it", n)
	}
}
