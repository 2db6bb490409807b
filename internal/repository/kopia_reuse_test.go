package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/fs/localfs"
	"github.com/kopia/kopia/fs/virtualfs"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/kopia/kopia/repo/compression"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/format"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/snapshotfs"
	"github.com/kopia/kopia/snapshot/upload"
)

// reuseTestSplitter cuts chunks of 64–256 KiB (128 KiB on average): a file of a few MiB
// has dozens of them. The logic does not depend on the size; TestReuseDefaultSplitter
// runs the default one.
const reuseTestSplitter = "DYNAMIC-128K-BUZHASH"

// newReuseRepo initialises a kopia repository on a filesystem store with the given
// splitter and opens it; it returns the repository, its store's path and password.
func newReuseRepo(t *testing.T, splitterName string) (repo.DirectRepository, string, string) {
	t.Helper()
	ctx := ctxFor(t)
	path := t.TempDir()
	st, err := filesystem.New(ctx, &filesystem.Options{Path: path}, true)
	if err != nil {
		t.Fatal(err)
	}
	const password = "reuse-test-password"
	if err := repo.Initialize(ctx, st, &repo.NewRepositoryOptions{ObjectFormat: format.ObjectFormat{Splitter: splitterName}}, password); err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(t.TempDir(), "repository.config")
	if err := repo.Connect(ctx, configFile, st, password, &repo.ConnectOptions{CachingOptions: content.CachingOptions{CacheDirectory: t.TempDir()}}); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, configFile, password, &repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r.(repo.DirectRepository), path, password
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomSeed(t *testing.T) uint64 {
	return binary.LittleEndian.Uint64(randomBytes(t, 8))
}

// reuseWrite runs writeReusing in a write session (flushed).
func reuseWrite(t *testing.T, r repo.DirectRepository, data []byte, prev *previousFile, opt reuseOptions) (object.ID, *reuseMap, reuseStats) {
	t.Helper()
	ctx := ctxFor(t)
	var (
		id object.ID
		m  *reuseMap
		st reuseStats
	)
	err := repo.WriteSession(ctx, r, repo.WriteSessionOptions{Purpose: "reuse test"}, func(ctx context.Context, w repo.RepositoryWriter) (err error) {
		id, m, st, err = writeReusing(ctx, w, bytes.NewReader(data), int64(len(data)), prev, opt)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id, m, st
}

// kopiaWrite writes data through kopia's own object writer, as the upload writes a
// file (below the parallel-upload size), and returns its object.
func kopiaWrite(t *testing.T, r repo.DirectRepository, data []byte) object.ID {
	t.Helper()
	ctx := ctxFor(t)
	var id object.ID
	err := repo.WriteSession(ctx, r, repo.WriteSessionOptions{Purpose: "reuse test"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		ow := w.NewObjectWriter(ctx, object.WriterOptions{Description: "FILE:x", AsyncWrites: 1})
		defer ow.Close()
		if _, err := ow.Write(data); err != nil {
			return err
		}
		var err error
		id, err = ow.Result()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func readObject(t *testing.T, r repo.Repository, id object.ID) []byte {
	t.Helper()
	rd, err := r.OpenObject(ctxFor(t), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func indexEntries(t *testing.T, r repo.DirectRepository, id object.ID, size int64, m *reuseMap) []object.IndirectObjectEntry {
	t.Helper()
	var entries []object.IndirectObjectEntry
	err := repo.WriteSession(ctxFor(t), r, repo.WriteSessionOptions{}, func(ctx context.Context, w repo.RepositoryWriter) (err error) {
		entries, _, err = previousEntries(ctx, w, &previousFile{Object: id, Size: size, Map: m}, reuseOptions{Splitter: m.Splitter, PartSize: m.PartSize})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("no index entries for %v", id)
	}
	return entries
}

func reuseTestOptions(t *testing.T) reuseOptions {
	return reuseOptions{Splitter: reuseTestSplitter, Seed: randomSeed(t), Name: "data.db"}
}

// TestReuseWritesKopiasObject: with nothing to reuse, the writer produces the very
// object kopia's own writer produces from the same bytes (same chunks, same index,
// same ID), and its map has a fingerprint per chunk.
func TestReuseWritesKopiasObject(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	for _, n := range []int{0, 100, 64 << 10, 3<<20 + 12345} {
		data := randomBytes(t, n)
		id, m, st := reuseWrite(t, r, data, nil, opt)
		if want := kopiaWrite(t, r, data); id != want {
			t.Errorf("%d bytes: object %v, kopia's writer wrote %v", n, id, want)
		}
		if got := readObject(t, r, id); !bytes.Equal(got, data) {
			t.Errorf("%d bytes: the object reads back differently", n)
		}
		if st.ReusedChunks != 0 || st.WrittenBytes != int64(n) {
			t.Errorf("%d bytes: %+v, want all written", n, st)
		}
		if n > 1<<20 {
			if e := indexEntries(t, r, id, int64(n), m); len(e) < 10 {
				t.Errorf("%d bytes in %d chunks: the test splitter should cut more", n, len(e))
			}
		}
	}
}

// TestReuseChangedRegionsAreNeverReused is the list: a byte flipped in the
// middle of a chunk, in the first and in the last chunk, across a chunk boundary, the
// file truncated and extended. Each time the new object reads back exactly as the new
// file, is the object kopia's own writer makes of the new file (so dedup is unchanged
// and the kopia CLI reads it), and only the chunks around the change were split,
// hashed and written: the rest was reused.
func TestReuseChangedRegionsAreNeverReused(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	const size = 4 << 20
	base := randomBytes(t, size)
	id0, m0, _ := reuseWrite(t, r, base, nil, opt)
	old := indexEntries(t, r, id0, size, m0)
	if len(old) < 10 {
		t.Fatalf("%d chunks: the test splitter should cut more", len(old))
	}
	mid := old[len(old)/2]
	last := old[len(old)-1]
	flip := func(offsets ...int64) func([]byte) []byte {
		return func(b []byte) []byte {
			for _, o := range offsets {
				b[o] ^= 0x5a
			}
			return b
		}
	}
	const maxChunk = 256 << 10 // the test splitter's largest chunk
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		// maxWritten bounds the bytes split and written: the changed chunks and the
		// few that follow until a cut falls on an old cut again.
		maxWritten int64
	}{
		{"unchanged", func(b []byte) []byte { return b }, 0},
		{"middle of a chunk", flip(mid.Start + mid.Length/2), 3 * maxChunk},
		{"first chunk", flip(10), 3 * maxChunk},
		{"first byte", flip(0), 3 * maxChunk},
		{"last chunk", flip(size - 5), last.Length},
		{"last byte", flip(size - 1), last.Length},
		{"across a chunk boundary", flip(mid.Start-1, mid.Start), 4 * maxChunk},
		{"one byte in each of three chunks", flip(old[2].Start+7, mid.Start+mid.Length/3, last.Start+1), 9 * maxChunk},
		{"truncated mid-chunk", func(b []byte) []byte { return b[:mid.Start+mid.Length/2] }, mid.Length},
		{"truncated at a cut", func(b []byte) []byte { return b[:mid.Start] }, 0},
		{"truncated to one byte", func(b []byte) []byte { return b[:1] }, 1},
		{"extended", func(b []byte) []byte { return append(b, randomBytes(t, 700<<10)...) }, last.Length + 700<<10 + 2*maxChunk},
		{"extended by one byte", func(b []byte) []byte { return append(b, 1) }, last.Length + 1 + maxChunk},
		{"emptied", func(b []byte) []byte { return b[:0] }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.change(bytes.Clone(base))
			id, m, st := reuseWrite(t, r, data, &previousFile{Object: id0, Size: size, Map: m0}, opt)
			if got := readObject(t, r, id); !bytes.Equal(got, data) {
				t.Fatalf("the object does not read back as the new file (%d bytes read, %d in the file; %+v)", len(got), len(data), st)
			}
			if want := kopiaWrite(t, r, data); id != want {
				t.Errorf("object %v, kopia's writer wrote %v", id, want)
			}
			if st.WrittenBytes > tc.maxWritten {
				t.Errorf("%d bytes split and written, want at most %d (%+v)", st.WrittenBytes, tc.maxWritten, st)
			}
			if st.ReusedBytes+st.WrittenBytes != int64(len(data)) {
				t.Errorf("reused %d + written %d bytes, the file has %d", st.ReusedBytes, st.WrittenBytes, len(data))
			}
			if len(m.Sums) != max(1, len(indexOrSingle(t, r, id, int64(len(data)), m))) {
				t.Errorf("the map has %d fingerprints for the object's chunks", len(m.Sums))
			}
			t.Logf("%+v", st)
		})
	}
}

func indexOrSingle(t *testing.T, r repo.DirectRepository, id object.ID, size int64, m *reuseMap) []object.IndirectObjectEntry {
	if size == 0 {
		return nil
	}
	return indexEntries(t, r, id, size, m)
}

// TestReuseAcrossGenerations: the map a reusing backup returns serves the next one.
func TestReuseAcrossGenerations(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	data := randomBytes(t, 3<<20)
	prev := &previousFile{Size: int64(len(data))}
	prev.Object, prev.Map, _ = reuseWrite(t, r, data, nil, opt)
	for i, o := range []int{1 << 20, 2 << 20, 1 << 20, 100} {
		data = bytes.Clone(data)
		data[o] ^= 0xff
		id, m, st := reuseWrite(t, r, data, prev, opt)
		if got := readObject(t, r, id); !bytes.Equal(got, data) {
			t.Fatalf("generation %d: the object does not read back as the file", i)
		}
		if st.ReusedChunks == 0 || st.WrittenBytes > 3*(256<<10) {
			t.Errorf("generation %d: %+v", i, st)
		}
		prev = &previousFile{Object: id, Size: int64(len(data)), Map: m}
	}
}

// TestReuseTrustsNoForeignMap: a map that does not describe the previous object (another
// object's, another key's, one of another length, or of another splitter's cuts)
// reuses nothing, so the result is still right.
func TestReuseTrustsNoForeignMap(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	a := randomBytes(t, 2<<20)
	b := randomBytes(t, 2<<20)
	idA, mA, _ := reuseWrite(t, r, a, nil, opt)
	_, mB, _ := reuseWrite(t, r, b, nil, opt)
	short, otherSplitter, otherFunction := *mA, *mA, *mA
	short.Sums = mA.Sums[1:]
	otherSplitter.Splitter = "DYNAMIC-128K-RABINKARP"
	otherFunction.Fingerprint = "XXH3-128"
	otherKey := opt
	otherKey.Seed = opt.Seed + 1
	for name, tc := range map[string]struct {
		prev *previousFile
		opt  reuseOptions
	}{
		"another object's map":         {&previousFile{Object: idA, Size: int64(len(a)), Map: mB}, opt},
		"a map of another length":      {&previousFile{Object: idA, Size: int64(len(a)), Map: &short}, opt},
		"another key":                  {&previousFile{Object: idA, Size: int64(len(a)), Map: mA}, otherKey},
		"another splitter's cuts":      {&previousFile{Object: idA, Size: int64(len(a)), Map: &otherSplitter}, opt},
		"another fingerprint function": {&previousFile{Object: idA, Size: int64(len(a)), Map: &otherFunction}, opt},
	} {
		t.Run(name, func(t *testing.T) {
			id, _, st := reuseWrite(t, r, a, tc.prev, tc.opt)
			if got := readObject(t, r, id); !bytes.Equal(got, a) {
				t.Fatal("the object does not read back as the file")
			}
			if id != idA {
				t.Errorf("object %v, want %v", id, idA)
			}
			if st.ReusedChunks != 0 {
				t.Errorf("%+v: reused chunks of a map that does not fit", st)
			}
		})
	}
}

// reusedFile is a file of the volume whose object was already written (by
// writeReusing): kopia's uploader takes the entry as is (snapshot.HasDirEntryOrNil,
// the hook it has for placeholders) after checking that every content of the object
// exists. This is how the reusing writer would enter Backup.
type reusedFile struct {
	fs.File
	de *snapshot.DirEntry
}

func (f *reusedFile) DirEntryOrNil(context.Context) (*snapshot.DirEntry, error) { return f.de, nil }

// TestReuseKopiaCLIRestoresAndVerifies: a snapshot whose file object was written by
// reusing the previous object's chunks passes the kopia CLI's snapshot verify with
// every file read, and the CLI restores the file byte for byte.
func TestReuseKopiaCLIRestoresAndVerifies(t *testing.T) {
	ctx := ctxFor(t)
	r, path, password := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "data.db")
	data := randomBytes(t, 4<<20)
	writeAndReuse := func(prev *previousFile) (*previousFile, reuseStats) {
		t.Helper()
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var (
			id object.ID
			m  *reuseMap
			st reuseStats
		)
		err = repo.WriteSession(ctx, r, repo.WriteSessionOptions{Purpose: "reuse test"}, func(ctx context.Context, w repo.RepositoryWriter) (err error) {
			id, m, st, err = writeReusing(ctx, w, f, int64(len(data)), prev, opt)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return &previousFile{Object: id, Size: int64(len(data)), Map: m}, st
	}
	prev, _ := writeAndReuse(nil)
	data = bytes.Clone(data)
	data[1<<20] ^= 1                                // a page in the middle
	data = append(data, randomBytes(t, 300<<10)...) // and the file grew
	cur, st := writeAndReuse(prev)
	if st.ReusedChunks == 0 || st.WrittenBytes > 1<<20 {
		t.Fatalf("nothing reused: %+v", st)
	}

	e, err := localfs.NewEntry(file)
	if err != nil {
		t.Fatal(err)
	}
	lf := e.(fs.File)
	de := &snapshot.DirEntry{
		Name: lf.Name(), Type: snapshot.EntryTypeFile, Permissions: snapshot.Permissions(lf.Mode() & fs.ModBits),
		FileSize: lf.Size(), ModTime: fs.UTCTimestampFromTime(lf.ModTime()),
		UserID: lf.Owner().UserID, GroupID: lf.Owner().GroupID, ObjectID: cur.Object,
	}
	root := virtualfs.NewStaticDirectory("root", []fs.Entry{&reusedFile{File: lf, de: de}})
	si := snapshot.SourceInfo{Host: "reuse", UserName: "test", Path: "/data"}
	var snapID string
	err = repo.WriteSession(ctx, r, repo.WriteSessionOptions{Purpose: "reuse test"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		man, err := upload.NewUploader(w).Upload(ctx, root, policy.BuildTree(nil, policy.DefaultPolicy), si)
		if err != nil {
			return err
		}
		id, err := snapshot.SaveSnapshot(ctx, w, man)
		snapID = string(id)
		if err != nil {
			return err
		}
		// The snapshot holds the reusing writer's object, not one the uploader wrote.
		sr, err := snapshotfs.SnapshotRoot(w, man)
		if err != nil {
			return err
		}
		child, err := sr.(fs.Directory).Child(ctx, "data.db")
		if err != nil {
			return err
		}
		if got := child.(object.HasObjectID).ObjectID(); got != cur.Object {
			t.Errorf("the snapshot's file is %v, the reusing writer wrote %v", got, cur.Object)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	run := kopiaCLI(t, ctx, path, password)
	t.Log(run("snapshot", "verify", "--verify-files-percent=100", snapID))
	target := t.TempDir()
	run("restore", snapID, target)
	got, err := os.ReadFile(filepath.Join(target, "data.db"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the CLI restored %d bytes that differ from the file's %d", len(got), len(data))
	}
}

// TestReuseDefaultSplitter runs the cases with kopia's default splitter
// (DYNAMIC-4M-BUZHASH: chunks of 2–8 MiB) on a file of 24 MiB.
func TestReuseDefaultSplitter(t *testing.T) {
	r, _, _ := newReuseRepo(t, "")
	opt := reuseTestOptions(t)
	opt.Splitter = r.ObjectFormat().Splitter
	if opt.Splitter != "DYNAMIC-4M-BUZHASH" {
		t.Fatalf("the default splitter is %s", opt.Splitter)
	}
	const size = 24 << 20
	base := randomBytes(t, size)
	id0, m0, _ := reuseWrite(t, r, base, nil, opt)
	old := indexEntries(t, r, id0, size, m0)
	mid := old[len(old)/2]
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"middle of a chunk", func(b []byte) []byte { b[mid.Start+mid.Length/2]++; return b }},
		{"first chunk", func(b []byte) []byte { b[1]++; return b }},
		{"last chunk", func(b []byte) []byte { b[size-1]++; return b }},
		{"across a chunk boundary", func(b []byte) []byte { b[mid.Start-1]++; b[mid.Start]++; return b }},
		{"truncated", func(b []byte) []byte { return b[:size-3<<20] }},
		{"extended", func(b []byte) []byte { return append(b, randomBytes(t, 3<<20)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.change(bytes.Clone(base))
			id, _, st := reuseWrite(t, r, data, &previousFile{Object: id0, Size: size, Map: m0}, opt)
			if got := readObject(t, r, id); !bytes.Equal(got, data) {
				t.Fatalf("the object does not read back as the new file (%+v)", st)
			}
			if want := kopiaWrite(t, r, data); id != want {
				t.Errorf("object %v, kopia's writer wrote %v", id, want)
			}
			if st.ReusedChunks == 0 || st.WrittenBytes > 3*(8<<20)+3<<20 {
				t.Errorf("%+v", st)
			}
			t.Logf("%d chunks before; %+v", len(old), st)
		})
	}
}

// TestReuseWithCompression: with the compressors kopia's default policy gives (none for
// data here, zstd-fastest for the index) and with data compression on, the reused object
// is still the one kopia's writer makes with the same options, and reads back.
func TestReuseWithCompression(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	for _, comp := range []compression.Name{"", "zstd-fastest"} {
		opt := reuseTestOptions(t)
		opt.Compressor, opt.MetadataCompressor = comp, "zstd-fastest"
		var text bytes.Buffer
		for i := 0; text.Len() < 3<<20; i++ {
			fmt.Fprintf(&text, "row %d: %x\n", i, randomBytes(t, 8))
		}
		base := text.Bytes()
		id0, m0, _ := reuseWrite(t, r, base, nil, opt)
		data := bytes.Clone(base)
		data[len(data)/2] ^= 1
		id, _, st := reuseWrite(t, r, data, &previousFile{Object: id0, Size: int64(len(base)), Map: m0}, opt)
		if got := readObject(t, r, id); !bytes.Equal(got, data) {
			t.Fatalf("compressor %q: the object does not read back as the file", comp)
		}
		var want object.ID
		err := repo.WriteSession(ctxFor(t), r, repo.WriteSessionOptions{}, func(ctx context.Context, w repo.RepositoryWriter) (err error) {
			ow := w.NewObjectWriter(ctx, object.WriterOptions{Description: "FILE:x", Compressor: comp, MetadataCompressor: "zstd-fastest"})
			defer ow.Close()
			if _, err := ow.Write(data); err != nil {
				return err
			}
			want, err = ow.Result()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if id != want {
			t.Errorf("compressor %q: object %v, kopia's writer wrote %v", comp, id, want)
		}
		if st.ReusedChunks == 0 || st.WrittenChunks > 3 {
			t.Errorf("compressor %q: %+v", comp, st)
		}
	}
}

// uploaderObject backs up file with kopia's own uploader under kopia's default policy
// with ParallelUploadAboveSize set to partSize, and returns the file's object.
func uploaderObject(t *testing.T, r repo.DirectRepository, file string, partSize int64) object.ID {
	t.Helper()
	ctx := ctxFor(t)
	e, err := localfs.NewEntry(file)
	if err != nil {
		t.Fatal(err)
	}
	pol := *policy.DefaultPolicy
	ps := policy.OptionalInt64(partSize)
	pol.UploadPolicy.ParallelUploadAboveSize = &ps
	var id object.ID
	err = repo.WriteSession(ctx, r, repo.WriteSessionOptions{Purpose: "reuse test"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		man, err := upload.NewUploader(w).Upload(ctx, virtualfs.NewStaticDirectory("root", []fs.Entry{e}), policy.BuildTree(nil, &pol),
			snapshot.SourceInfo{Host: "reuse", UserName: "test", Path: "/parts"})
		if err != nil {
			return err
		}
		root, err := snapshotfs.SnapshotRoot(w, man)
		if err != nil {
			return err
		}
		child, err := root.(fs.Directory).Child(ctx, filepath.Base(file))
		if err != nil {
			return err
		}
		id = child.(object.HasObjectID).ObjectID()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestReuseParallelUploadParts: above the policy's ParallelUploadAboveSize (2 GiB by
// default; 1 MiB here) kopia's uploader cuts a file in parts, each from a fresh
// splitter, and concatenates them; the reusing writer makes the very object kopia's
// uploader makes of the new file, also when a change sits on a part boundary and when
// the size becomes a multiple of the part size (kopia's last part is then empty).
func TestReuseParallelUploadParts(t *testing.T) {
	r, _, _ := newReuseRepo(t, reuseTestSplitter)
	opt := reuseTestOptions(t)
	const part = 1 << 20
	opt.PartSize, opt.MetadataCompressor = part, "zstd-fastest" // as the default policy
	file := filepath.Join(t.TempDir(), "data.db")
	const size = 3*part + part/2
	base := randomBytes(t, size)
	id0, m0, _ := reuseWrite(t, r, base, nil, opt)
	if err := os.WriteFile(file, base, 0o644); err != nil {
		t.Fatal(err)
	}
	if want := uploaderObject(t, r, file, part); id0 != want {
		t.Fatalf("object %v, kopia's uploader made %v", id0, want)
	}
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"unchanged", func(b []byte) []byte { return b }},
		{"middle of a part", func(b []byte) []byte { b[part+part/2]++; return b }},
		{"last byte of a part", func(b []byte) []byte { b[2*part-1]++; return b }},
		{"first byte of a part", func(b []byte) []byte { b[2*part]++; return b }},
		{"truncated to a multiple of the part size", func(b []byte) []byte { return b[:3*part] }},
		{"truncated to one part", func(b []byte) []byte { return b[:part] }},
		{"extended into a new part", func(b []byte) []byte { return append(b, randomBytes(t, part)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.change(bytes.Clone(base))
			id, _, st := reuseWrite(t, r, data, &previousFile{Object: id0, Size: size, Map: m0}, opt)
			if got := readObject(t, r, id); !bytes.Equal(got, data) {
				t.Fatalf("the object does not read back as the new file (%+v)", st)
			}
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if want := uploaderObject(t, r, file, part); id != want {
				t.Errorf("object %v, kopia's uploader made %v (%+v)", id, want, st)
			}
			if tc.name != "truncated to one part" && st.ReusedChunks == 0 {
				t.Errorf("nothing reused: %+v", st)
			}
			t.Logf("%+v", st)
		})
	}
}
