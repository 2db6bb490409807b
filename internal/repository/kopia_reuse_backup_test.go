package repository

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/snapshotfs"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// reuseVolume is a volume of a test of Backup's reuse of large files: a database file
// that changes between backups, a large file that never changes and a small file.
type reuseVolume struct {
	t     *testing.T
	dir   string
	files map[string][]byte
	gen   int
}

func (v *reuseVolume) write(name string, data []byte) {
	v.t.Helper()
	p := filepath.Join(v.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		v.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o640); err != nil {
		v.t.Fatal(err)
	}
	// A time of its own for each generation: two writes within the kernel's clock
	// tick can leave a file's time as it was, and kopia would then take the file
	// from the parent unread.
	v.gen++
	mt := time.Date(2026, 1, 1, 0, 0, v.gen, 0, time.UTC)
	if err := os.Chtimes(p, mt, mt); err != nil {
		v.t.Fatal(err)
	}
	v.files[name] = data
}

// seededBytes are n random bytes, the same for the same seed: the chunks kopia's
// splitter cuts from them, and so what a change touches, are the same in every run.
func seededBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// kopiaCLI runs the kopia command line tool against the filesystem repository at
// path: it reads what Holdfast writes as any kopia snapshot.
func kopiaCLI(t *testing.T, ctx context.Context, path, password string) func(args ...string) string {
	kopia := filepath.Join(testenv.ToolsBin(), "kopia")
	configFile := filepath.Join(t.TempDir(), "cli.config")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kopia, append(args, "--config-file", configFile)...)
		cmd.Env = append(os.Environ(), "KOPIA_PASSWORD="+password, "KOPIA_CHECK_FOR_UPDATES=false",
			"KOPIA_CACHE_DIRECTORY="+t.TempDir(), "KOPIA_LOG_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kopia %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("repository", "connect", "filesystem", "--path", path)
	return run
}

// reuseListOf is the list of fingerprints at the root of snapshot id.
func reuseListOf(t *testing.T, ctx context.Context, r *kopiaRepository, id string) *reuseList {
	t.Helper()
	man, err := snapshot.LoadSnapshot(ctx, r.rep, manifest.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	list, err := readReuseList(ctx, r.rep, man)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// snapshotFile is the entry at path (slashes, as on disk) of snapshot id.
func snapshotFile(t *testing.T, ctx context.Context, r *kopiaRepository, id, path string) *snapshot.DirEntry {
	t.Helper()
	man, err := snapshot.LoadSnapshot(ctx, r.rep, manifest.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	root, err := snapshotfs.SnapshotRoot(r.rep, man)
	if err != nil {
		t.Fatal(err)
	}
	e := fs.Entry(root)
	for _, name := range strings.Split(path, "/") {
		c, err := e.(fs.Directory).Child(ctx, kopiarestore.EncodeName(name))
		if err != nil {
			t.Fatalf("%s in snapshot %s: %v", path, id, err)
		}
		e = c
	}
	return e.(snapshot.HasDirEntry).DirEntry()
}

// TestBackupReusesUnchangedChunksOfLargeFiles drives Backup as the mover does through
// generations of a volume whose large file changes in place, on kopia's default
// splitter: each change is stored (Holdfast's restore and the kopia CLI give back the
// new bytes, and `kopia snapshot verify` passes), the regions that did not change are
// taken from the parent without being hashed again, and the file's object is the one
// kopia's own upload makes of it.
func TestBackupReusesUnchangedChunksOfLargeFiles(t *testing.T) {
	ctx := ctxFor(t)
	defer func(old int64) { reuseMinSize = old }(reuseMinSize)
	reuseMinSize = 1 << 20

	store := t.TempDir()
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: store}}, v1.UploaderKopia, "demo")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	rp, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close(context.Background())
	r := rp.(*kopiaRepository)
	cli := kopiaCLI(t, ctx, filepath.Join(store, cfg.location()), cfg.Password)

	vol := &reuseVolume{t: t, dir: t.TempDir(), files: map[string][]byte{}}
	const db = "pgdata/base/16384"
	vol.write(db, seededBytes(1, 24<<20)) // 3–12 chunks of kopia's default splitter
	vol.write("images/base.qcow2", seededBytes(2, 3<<20))
	vol.write("PG_VERSION", []byte("17\n"))

	var last BackupResult
	backup := func(step string) BackupResult {
		t.Helper()
		res, err := r.Backup(ctx, BackupRequest{Dir: vol.dir, SourcePath: "/pod/db/data"})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		var size int64
		for _, b := range vol.files {
			size += int64(len(b))
		}
		if res.TotalFiles != int64(len(vol.files)) || res.TotalBytes != size {
			t.Errorf("%s: the result counts %d files of %d bytes, the volume has %d of %d", step, res.TotalFiles, res.TotalBytes, len(vol.files), size)
		}
		// Holdfast's restore, then the kopia CLI's, give back the volume as it is now.
		target := t.TempDir()
		rr, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
		if err != nil {
			t.Fatalf("%s: restore: %v", step, err)
		}
		if rr.TotalFiles != int64(len(vol.files)) {
			t.Errorf("%s: restored %d files, want %d", step, rr.TotalFiles, len(vol.files))
		}
		cli("snapshot", "verify", "--verify-files-percent=100", res.SnapshotID)
		cliTarget := t.TempDir()
		cli("restore", res.SnapshotID, cliTarget)
		for name, want := range vol.files {
			for who, dir := range map[string]string{"Holdfast": target, "the kopia CLI": cliTarget} {
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("%s: %s restored: %v", step, who, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: %s restored %s as %d bytes that are not the volume's %d", step, who, name, len(got), len(want))
				}
			}
		}
		if _, err := os.Stat(filepath.Join(target, kopiarestore.ReuseName)); !os.IsNotExist(err) {
			t.Errorf("%s: Holdfast's restore wrote its list of fingerprints into the volume (%v)", step, err)
		}
		last = res
		return res
	}

	first := backup("first backup")
	if first.BytesReused != 0 {
		t.Errorf("the first backup reused %d bytes", first.BytesReused)
	}
	// The chunks of the database file as the first backup cut them.
	chunks := func() []object.IndirectObjectEntry {
		t.Helper()
		list := reuseListOf(t, ctx, r, last.SnapshotID)
		de := snapshotFile(t, ctx, r, last.SnapshotID, db)
		for _, rec := range list.Files {
			if rec.Path == db && rec.Map.Object == de.ObjectID && rec.Size == de.FileSize {
				return indexOrSingle(t, r.rep, de.ObjectID, de.FileSize, rec.Map)
			}
		}
		t.Fatalf("the snapshot's list of fingerprints has no record of %s's object %v: %+v", db, de.ObjectID, list.Files)
		return nil
	}
	if n := len(chunks()); n < 3 {
		t.Fatalf("the database file has %d chunks: the test needs at least 3", n)
	}

	if res := backup("unchanged"); res.BytesReused != 0 {
		t.Errorf("an unchanged volume reused %d bytes: kopia's own cache should take it", res.BytesReused)
	}

	flip := func(offsets ...int64) func([]byte) []byte {
		return func(b []byte) []byte {
			b = bytes.Clone(b)
			for _, o := range offsets {
				b[o] ^= 0x5a
			}
			return b
		}
	}
	for _, tc := range []struct {
		name   string
		change func(b []byte, cuts []object.IndirectObjectEntry) []byte
		// changed is how many chunks of the parent's the change may touch at most.
		changed int
	}{
		{"a byte in the middle of a chunk", func(b []byte, c []object.IndirectObjectEntry) []byte {
			m := c[len(c)/2]
			return flip(m.Start + m.Length/2)(b)
		}, 2},
		{"the first byte", func(b []byte, _ []object.IndirectObjectEntry) []byte { return flip(0)(b) }, 2},
		{"a byte in the first chunk", func(b []byte, c []object.IndirectObjectEntry) []byte { return flip(c[0].Length / 3)(b) }, 2},
		{"a byte in the last chunk", func(b []byte, c []object.IndirectObjectEntry) []byte {
			l := c[len(c)-1]
			return flip(l.Start + l.Length/2)(b)
		}, 1},
		{"the last byte", func(b []byte, _ []object.IndirectObjectEntry) []byte { return flip(int64(len(b) - 1))(b) }, 1},
		{"bytes across a chunk boundary", func(b []byte, c []object.IndirectObjectEntry) []byte {
			at := c[1].Start
			return flip(at-2, at-1, at, at+1)(b)
		}, 3},
		{"truncated in the middle of a chunk", func(b []byte, c []object.IndirectObjectEntry) []byte {
			l := c[len(c)-2]
			return bytes.Clone(b[:l.Start+l.Length/2])
		}, 1},
		{"extended by 700 KiB", func(b []byte, _ []object.IndirectObjectEntry) []byte {
			return append(bytes.Clone(b), seededBytes(3, 700<<10)...)
		}, 1},
		{"extended by one byte", func(b []byte, _ []object.IndirectObjectEntry) []byte { return append(bytes.Clone(b), 7) }, 1},
	} {
		c := chunks()
		before := vol.files[db]
		vol.write(db, tc.change(before, c))
		res := backup(tc.name)
		t.Logf("%s: reused %d of %d bytes", tc.name, res.BytesReused, len(vol.files[db]))
		// Only whole chunks of the parent are reused, and at most tc.changed of them
		// are not: the one changed (or cut) and the one the splitter runs on into.
		var largest int64
		for _, e := range c {
			largest = max(largest, e.Length)
		}
		size := int64(len(vol.files[db]))
		if res.BytesReused >= size || res.BytesReused < min(size, int64(len(before)))-int64(tc.changed)*largest {
			t.Errorf("%s: reused %d of %d bytes (largest chunk %d)", tc.name, res.BytesReused, size, largest)
		}
	}

	// The unchanged large file kept its record through every generation (kopia took
	// it from the parent each time): the list names both large files.
	list := reuseListOf(t, ctx, r, last.SnapshotID)
	if len(list.Files) != 2 || list.Files[0].Path != "images/base.qcow2" || list.Files[1].Path != db {
		t.Errorf("the list of fingerprints holds %+v, want the two large files", list.Files)
	}
	// A browse of the snapshot shows the volume, not Holdfast's list.
	entries, err := r.List(ctx, last.SnapshotID, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != "PG_VERSION images pgdata" {
		t.Errorf("browsing the snapshot's root lists %q, want the volume's PG_VERSION, images and pgdata", names)
	}

	// The object is kopia's own: the same volume backed up with kopia's path (as
	// another source, so without a parent) stores the same object for the file.
	reuseMinSize = math.MaxInt64
	plain, err := r.Backup(ctx, BackupRequest{Dir: vol.dir, SourcePath: "/pod/db/copy"})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := snapshotFile(t, ctx, r, last.SnapshotID, db).ObjectID, snapshotFile(t, ctx, r, plain.SnapshotID, db).ObjectID; a != b {
		t.Errorf("the reusing path stored %v, kopia's path %v: not the same chunks", a, b)
	}
}

// TestBackupOfALargeFileTruncatedWhileRead: a large file that shrinks after the
// reusing writer took its size (a log or database file truncated while the backup
// reads it) is not a failed backup: kopia's own path stores what the file holds then.
func TestBackupOfALargeFileTruncatedWhileRead(t *testing.T) {
	ctx := ctxFor(t)
	defer func(old int64) { reuseMinSize = old }(reuseMinSize)
	reuseMinSize = 1 << 20
	r := filesystemRepository(t, v1.UploaderKopia)
	dir := t.TempDir()
	file := filepath.Join(dir, "wal.log")
	data := seededBytes(4, 3<<20)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	kept := data[:3<<19]
	afterReuseStat = func(path string) {
		if path == file {
			if err := os.Truncate(path, int64(len(kept))); err != nil {
				t.Error(err)
			}
		}
	}
	defer func() { afterReuseStat = nil }()
	res, err := r.Backup(ctx, BackupRequest{Dir: dir, SourcePath: "/pod/db/wal"})
	if err != nil {
		t.Fatalf("the backup of a file truncated while read failed: %v", err)
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "wal.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, kept) {
		t.Fatalf("restored %d bytes, want the %d the file held after it was truncated", len(got), len(kept))
	}
}
