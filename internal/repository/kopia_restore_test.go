package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	kopiafs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
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
	files := map[string]string{}
	for _, name := range []string{"a.bin", "db/b.bin", "db/c.bin"} {
		files[name] = randomText(t, 1<<20)
	}
	id, cfg := kopiaSnapshotOf(t, "big", files)
	r := reopenWithEmptyCache(t, &cfg)
	return id, files, r, cfg.CacheDir
}

// kopiaSnapshotOf backs up files into a new kopia repository of namespace ns and
// returns the snapshot and the repository's configuration.
func kopiaSnapshotOf(t *testing.T, ns string, files map[string]string) (string, Config) {
	t.Helper()
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, v1.UploaderKopia, ns)
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeTree(t, src, files)
	backup, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := backup.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/" + ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := backup.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return snap.SnapshotID, cfg
}

// reopenWithEmptyCache opens the repository of cfg with a new, empty cache directory
// (set in cfg), as the agent opens it for a restore.
func reopenWithEmptyCache(t *testing.T, cfg *Config) *kopiaRepository {
	t.Helper()
	cfg.CacheDir = t.TempDir()
	r, err := Open(ctxFor(t), *cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r.(*kopiaRepository)
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
	if _, err := kopiarestore.Restore(ctx, out, root, 2, nil); err != nil {
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

// TestKopiaRestoreHoldsABoundedPartOfTheSnapshot: a restore keeps in memory the
// listings on its path through the tree and the files queued for its workers, not
// every entry of the snapshot. kopia's restore.Entry listed every directory before it
// wrote the first file, holding the entry of every file at once: about 0.8 KiB per
// file, 1.7 GiB for 2,000,000 files. The test counts the entries the restore has
// listed and not yet opened (for a file) or listed (for a directory).
func TestKopiaRestoreHoldsABoundedPartOfTheSnapshot(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	const dirs, perDir = 30, 200 // two levels: 5 × 6 directories of 200 files
	files := map[string]string{}
	for d := range dirs {
		for f := range perDir {
			files[fmt.Sprintf("d%d/e%d/f%03d", d/6, d%6, f)] = fmt.Sprintf("%d/%d", d, f)
		}
	}
	src := t.TempDir()
	writeTree(t, src, files)
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/many"})
	if err != nil {
		t.Fatal(err)
	}

	var held, peak atomic.Int64
	restoreRoot = func(e kopiafs.Entry) kopiafs.Entry {
		root := countedEntry(e, &held, &peak).(*countedDir)
		root.listed.Store(true) // never counted in
		return root
	}
	t.Cleanup(func() { restoreRoot = nil })
	target := t.TempDir()
	got, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalFiles != int64(len(files)) {
		t.Errorf("restored %d files, want %d", got.TotalFiles, len(files))
	}
	checkTree(t, target, files)
	t.Logf("at most %d of %d entries held at once", peak.Load(), len(files))
	// The listing of the directory being walked, those above it, and the files queued
	// for the workers; the whole snapshot holds 6,000 files.
	if limit := int64(2*perDir + 512); peak.Load() > limit {
		t.Errorf("the restore held up to %d entries of the snapshot at once, want at most %d of %d", peak.Load(), limit, len(files))
	}
	if held.Load() != 0 {
		t.Errorf("%d listed entries were never restored", held.Load())
	}
}

// countedEntry is e counting in held the entries listed below it and not yet taken
// up: a file until it is opened, a directory until it is listed.
func countedEntry(e kopiafs.Entry, held, peak *atomic.Int64) kopiafs.Entry {
	switch e := e.(type) {
	case kopiafs.Directory:
		return &countedDir{Directory: e, held: held, peak: peak}
	case kopiafs.File:
		return &countedFile{File: e, held: held}
	}
	return e
}

type countedDir struct {
	kopiafs.Directory
	held, peak *atomic.Int64
	listed     atomic.Bool
}

func (d *countedDir) Iterate(ctx context.Context) (kopiafs.DirectoryIterator, error) {
	if d.listed.CompareAndSwap(false, true) {
		d.held.Add(-1) // taken up
	}
	var entries []kopiafs.Entry
	var n int64
	err := kopiafs.IterateEntries(ctx, d.Directory, func(_ context.Context, e kopiafs.Entry) error {
		if strings.HasPrefix(e.Name(), kopiarestore.NamePrefix) {
			entries = append(entries, e) // Holdfast's own, not all opened
			return nil
		}
		entries = append(entries, countedEntry(e, d.held, d.peak))
		n++
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := d.held.Add(n)
	for p := d.peak.Load(); now > p && !d.peak.CompareAndSwap(p, now); p = d.peak.Load() {
	}
	return kopiafs.StaticIterator(entries, nil), nil
}

type countedFile struct {
	kopiafs.File
	held   *atomic.Int64
	opened atomic.Bool
}

func (f *countedFile) Open(ctx context.Context) (kopiafs.Reader, error) {
	if f.opened.CompareAndSwap(false, true) {
		f.held.Add(-1)
	}
	return f.File.Open(ctx)
}

// TestKopiaRestoreReadsALargeFileAhead: a file of many chunks, read several chunks at
// a time past the cache, is restored byte for byte; when a chunk in its middle is
// missing from the store the restore fails naming the file, and does not hang on the
// chunks read ahead of it.
func TestKopiaRestoreReadsALargeFileAhead(t *testing.T) {
	ctx := ctxFor(t)
	// One file only: another file stored in the pack removed below could fail first.
	files := map[string]string{"db/big.bin": randomText(t, 48<<20)}
	id, cfg := kopiaSnapshotOf(t, "ahead", files)
	r := reopenWithEmptyCache(t, &cfg)
	target := t.TempDir()
	if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: id, TargetDir: target}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, target, files)

	// The pack of a chunk in the middle of the file goes missing.
	entries := chunksOf(t, ctx, r, id, "db/big.bin")
	if len(entries) < 6 {
		t.Fatalf("the 48 MiB file is stored in %d chunks; the test needs several", len(entries))
	}
	cid, _, _ := entries[len(entries)/2].Object.ContentID()
	info, err := r.rep.ContentInfo(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kopiaStorage(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	if err := st.DeleteBlob(ctx, info.PackBlobID); err != nil {
		t.Fatal(err)
	}
	r = reopenWithEmptyCache(t, &cfg)
	_, err = r.Restore(ctx, RestoreRequest{SnapshotID: id, TargetDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "db/big.bin") {
		t.Fatalf("restore without a chunk of db/big.bin: %v, want an error naming the file", err)
	}
	t.Logf("restore without a chunk: %v", err)
}

// chunksOf is the index of the file name in snapshot id.
func chunksOf(t *testing.T, ctx context.Context, r *kopiaRepository, id, name string) []object.IndirectObjectEntry {
	t.Helper()
	idx, ok := snapshotFile(t, ctx, r, id, name).ObjectID.IndexObjectID()
	if !ok {
		return nil
	}
	rd, err := r.rep.OpenObject(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var ind indirectIndex
	if err := json.NewDecoder(rd).Decode(&ind); err != nil {
		t.Fatal(err)
	}
	return ind.Entries
}

// TestKopiaRestoreReadsSmallFilesFromWholePacksPastTheCache: small files are restored
// from their packs read whole into memory, not through kopia's data cache, which wrote
// every pack to a file before its contents were read back from it.
func TestKopiaRestoreReadsSmallFilesFromWholePacksPastTheCache(t *testing.T) {
	files := map[string]string{}
	for i := range 500 {
		files[fmt.Sprintf("d%d/f%03d.txt", i%5, i)] = randomText(t, 1000+i*7)
	}
	id, cfg := kopiaSnapshotOf(t, "small", files)
	r := reopenWithEmptyCache(t, &cfg)
	target := t.TempDir()
	if _, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: target}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, target, files)
	if n := cachedContentBytes(t, cfg.CacheDir); n != 0 {
		t.Errorf("the restore left %d bytes in kopia's data cache, want none", n)
	}
}
