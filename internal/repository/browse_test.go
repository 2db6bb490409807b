package repository

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Names of the browsed volume that need care: not UTF-8 (a file, and a directory on
// the way to one), longer than a tar header's 100 bytes, and a path deeper than 255.
var (
	badName  = "bad-\xff\xfe.txt"
	badDir   = "dir/\xe9t\xe9"
	longName = strings.Repeat("L", 150) + ".txt"
	deepDir  = strings.Repeat(strings.Repeat("d", 40)+"/", 8)
	bigSize  = int64(3<<20 + 12345)
)

// browseVolume writes the volume a browse test backs up, and returns its directory.
func browseVolume(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		"top.txt":                      "top",
		"dir/a.txt":                    "a in dir",
		"dir/nested/b.txt":             "b nested",
		"dir/nested/" + longName:       "a long name",
		badName:                        "not UTF-8 at the root",
		badDir + "/" + badName:         "not UTF-8 below a directory that is not either",
		deepDir + "bottom.txt":         "deep down",
		"dir/nested/private.txt":       "private",
		"big.bin":                      randomText(t, int(bigSize)),
		"dir/nested/deeper/c.txt":      "c",
		"dir/nested/deeper/empty.file": "",
	})
	for _, step := range []error{
		os.Chmod(filepath.Join(src, "dir/nested/private.txt"), 0o640),
		os.Mkdir(filepath.Join(src, "empty"), 0o750),
		os.Symlink("../../etc", filepath.Join(src, "dir", "link")),
		os.Symlink("dir", filepath.Join(src, "inlink")),
		syscall.Mkfifo(filepath.Join(src, "dir", "pipe"), 0o600),
		os.Link(filepath.Join(src, "dir/a.txt"), filepath.Join(src, "hardlink.txt")),
		os.Chtimes(filepath.Join(src, "dir/a.txt"), time.Time{}, time.Now().Add(time.Hour)),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return src
}

// item is what a browse test compares of an entry of a volume or a tar stream.
type item struct {
	typ    EntryType
	sum    string // a file's SHA-256
	target string
}

// volumeItems describes every entry below dir (FIFOs left out), by path relative to it.
func volumeItems(t *testing.T, dir string) map[string]item {
	t.Helper()
	out := map[string]item{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case p == dir:
		case d.IsDir():
			out[rel] = item{typ: EntryDir}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = item{typ: EntrySymlink, target: target}
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
			out[rel] = item{typ: EntryFile, sum: hex.EncodeToString(h.Sum(nil))}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// untar reads a tar stream with archive/tar: the entries by name (without a
// directory's trailing "/"), and fails the test if a name comes twice.
func untar(t *testing.T, r io.Reader) map[string]item {
	t.Helper()
	out := map[string]item{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading the tar stream: %v", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := out[name]; dup {
			t.Errorf("the tar stream holds %q twice", name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			out[name] = item{typ: EntryDir}
		case tar.TypeSymlink:
			out[name] = item{typ: EntrySymlink, target: h.Linkname}
		case tar.TypeReg:
			hash := sha256.New()
			if _, err := io.Copy(hash, tr); err != nil {
				t.Fatalf("reading %q from the tar stream: %v", name, err)
			}
			out[name] = item{typ: EntryFile, sum: hex.EncodeToString(hash.Sum(nil))}
		default:
			t.Errorf("the tar stream holds %q of type %q", name, h.Typeflag)
		}
	}
}

// under is items below the directory at prefix ("" for all), named with
// streamPrefix in front as a tar stream of that directory names them.
func under(items map[string]item, prefix, streamPrefix string) map[string]item {
	out := map[string]item{streamPrefix: {typ: EntryDir}}
	for name, it := range items {
		if prefix == "" {
			out[streamPrefix+"/"+name] = it
		} else if rest, ok := strings.CutPrefix(name, prefix+"/"); ok {
			out[streamPrefix+"/"+rest] = it
		}
	}
	return out
}

func compareItems(t *testing.T, what string, got, want map[string]item) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s lacks %q", what, name)
		} else if g != w {
			t.Errorf("%s: %q = %+v, want %+v", what, name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s holds %q, which it should not", what, name)
		}
	}
}

func tarOf(t *testing.T, r Repository, id, p string) (map[string]item, TarResult) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan map[string]item)
	go func() {
		items := untar(t, pr)
		_, _ = io.Copy(io.Discard, pr)
		done <- items
	}()
	res, err := r.Tar(ctxFor(t), id, p, pw)
	_ = pw.CloseWithError(err)
	items := <-done
	if err != nil {
		t.Fatalf("Tar(%q): %v", p, err)
	}
	return items, res
}

func sizeOfFiles(items map[string]item, sizes map[string]int64, prefix string) int64 {
	var n int64
	for name, it := range items {
		if it.typ == EntryFile && (prefix == "" || strings.HasPrefix(name, prefix+"/")) {
			n += sizes[name]
		}
	}
	return n
}

// TestBrowse: a snapshot of a volume with nested directories, a file of a few MiB, an
// empty directory, symlinks (one leading out of the volume), names that are not UTF-8,
// long names and deep paths, a hard link and a FIFO is described by Stat and List and
// streamed by Tar, entry for entry as the volume had it, with both uploaders.
func TestBrowse(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := browseVolume(t)
			backup, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/browse"})
			if err != nil {
				t.Fatal(err)
			}
			id := backup.SnapshotID
			items := volumeItems(t, src)
			sizes := map[string]int64{}
			for name, it := range items {
				if it.typ == EntryFile {
					fi, _ := os.Stat(filepath.Join(src, name))
					sizes[name] = fi.Size()
				}
			}

			t.Run("Stat", func(t *testing.T) {
				dirSize := func(prefix string) int64 {
					if uploader == v1.UploaderRestic {
						return -1 // restic records no directory sizes
					}
					return sizeOfFiles(items, sizes, prefix)
				}
				for _, c := range []struct {
					path string
					want Entry
				}{
					{"", Entry{Name: ".", Type: EntryDir, Size: dirSize("")}},
					{"dir", Entry{Name: "dir", Type: EntryDir, Size: dirSize("dir")}},
					{"empty", Entry{Name: "empty", Type: EntryDir, Size: dirSize("empty"), Mode: 0o750}},
					{"big.bin", Entry{Name: "big.bin", Type: EntryFile, Size: bigSize, Mode: 0o644}},
					{"dir/nested/private.txt", Entry{Name: "private.txt", Type: EntryFile, Size: 7, Mode: 0o640}},
					{"dir/link", Entry{Name: "link", Type: EntrySymlink, Target: "../../etc", Mode: 0o777}},
					{"inlink", Entry{Name: "inlink", Type: EntrySymlink, Target: "dir", Mode: 0o777}},
					{"dir/pipe", Entry{Name: "pipe", Type: EntryOther, Mode: 0o600}},
					{badName, Entry{Name: badName, Type: EntryFile, Size: int64(len("not UTF-8 at the root")), Mode: 0o644}},
					{badDir + "/" + badName, Entry{Name: badName, Type: EntryFile, Size: int64(len("not UTF-8 below a directory that is not either")), Mode: 0o644}},
					{"dir/nested/" + longName, Entry{Name: longName, Type: EntryFile, Size: 11, Mode: 0o644}},
					{deepDir + "bottom.txt", Entry{Name: "bottom.txt", Type: EntryFile, Size: 9, Mode: 0o644}},
				} {
					got, err := r.Stat(ctx, id, c.path)
					if err != nil {
						t.Errorf("Stat(%q): %v", c.path, err)
						continue
					}
					if got.ModTime.IsZero() {
						t.Errorf("Stat(%q) has no modification time", c.path)
					}
					got.ModTime = time.Time{}
					if c.want.Type == EntryDir && c.want.Mode == 0 {
						c.want.Mode = got.Mode // directories made by MkdirAll, umask-dependent
					}
					if got != c.want {
						t.Errorf("Stat(%q) = %+v, want %+v", c.path, got, c.want)
					}
				}
				// Times are the entries' own, a directory's too (not the newest time
				// below it: dir/a.txt is newer than dir).
				for _, p := range []string{"", "big.bin", "dir", "empty"} {
					fi, err := os.Stat(filepath.Join(src, p))
					if err != nil {
						t.Fatal(err)
					}
					if got, _ := r.Stat(ctx, id, p); !got.ModTime.Equal(fi.ModTime()) {
						t.Errorf("Stat(%q) time = %v, want %v", p, got.ModTime, fi.ModTime())
					}
				}
			})

			t.Run("List", func(t *testing.T) {
				names := func(p string) []string {
					t.Helper()
					entries, err := r.List(ctx, id, p)
					if err != nil {
						t.Fatalf("List(%q): %v", p, err)
					}
					var out []string
					for _, e := range entries {
						out = append(out, e.Name+":"+string(e.Type))
					}
					return out
				}
				want := []string{badName + ":file", "big.bin:file", "d" + strings.Repeat("d", 39) + ":dir", "dir:dir", "empty:dir", "hardlink.txt:file", "inlink:symlink", "top.txt:file"}
				sort.Strings(want)
				if got := names(""); strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("List of the root = %q, want %q (Holdfast's own files left out)", got, want)
				}
				want = []string{"a.txt:file", "link:symlink", "nested:dir", "pipe:other", "\xe9t\xe9:dir"}
				if got := names("dir"); strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("List of dir = %q, want %q", got, want)
				}
				if got := names("dir/link"); strings.Join(got, "|") != "link:symlink" {
					t.Errorf("List of a symlink = %q, want the symlink alone", got)
				}
				if got := names("big.bin"); strings.Join(got, "|") != "big.bin:file" {
					t.Errorf("List of a file = %q, want the file alone", got)
				}
				if got := names("empty"); len(got) != 0 {
					t.Errorf("List of an empty directory = %q", got)
				}
				entries, err := r.List(ctx, id, "dir/nested/deeper")
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != 2 || entries[0].Name != "c.txt" || entries[0].Size != 1 || entries[1].Size != 0 {
					t.Errorf("List of dir/nested/deeper = %+v", entries)
				}
			})

			t.Run("TarOfAFile", func(t *testing.T) {
				got, res := tarOf(t, r, id, "big.bin")
				compareItems(t, "the tar of big.bin", got, map[string]item{"big.bin": items["big.bin"]})
				if res != (TarResult{Files: 1, Bytes: bigSize}) {
					t.Errorf("TarResult = %+v", res)
				}
				got, _ = tarOf(t, r, id, badDir+"/"+badName)
				compareItems(t, "the tar of a file whose names are not UTF-8", got, map[string]item{badName: items[badDir+"/"+badName]})
			})

			t.Run("TarOfADirectory", func(t *testing.T) {
				got, res := tarOf(t, r, id, "dir")
				want := under(items, "dir", "dir")
				compareItems(t, "the tar of dir", got, want)
				if res.Skipped != 1 || res.Dirs != 4 || res.Symlinks != 1 || res.Files != 7 {
					t.Errorf("TarResult = %+v, want 7 files, 4 directories, 1 symlink, the FIFO skipped", res)
				}
				got, _ = tarOf(t, r, id, "dir/nested")
				compareItems(t, "the tar of dir/nested", got, under(items, "dir/nested", "nested"))
				got, _ = tarOf(t, r, id, "empty")
				compareItems(t, "the tar of an empty directory", got, map[string]item{"empty": {typ: EntryDir}})
				got, res = tarOf(t, r, id, "dir/link")
				compareItems(t, "the tar of a symlink", got, map[string]item{"link": {typ: EntrySymlink, target: "../../etc"}})
				if res != (TarResult{Symlinks: 1}) {
					t.Errorf("TarResult of a symlink = %+v", res)
				}
				got, res = tarOf(t, r, id, "dir/pipe")
				if len(got) != 0 || res != (TarResult{Skipped: 1}) {
					t.Errorf("the tar of a FIFO = %v, %+v; want nothing, the FIFO skipped", got, res)
				}
			})

			t.Run("TarOfTheRoot", func(t *testing.T) {
				got, res := tarOf(t, r, id, "")
				compareItems(t, "the tar of the root", got, under(items, "", "."))
				var bytes int64
				for _, n := range sizes {
					bytes += n
				}
				if res.Skipped != 1 || res.Bytes != bytes {
					t.Errorf("TarResult = %+v, want %d bytes and the FIFO skipped", res, bytes)
				}
			})

			t.Run("MissingPaths", func(t *testing.T) {
				for i, p := range []string{"nothing/below", "top.txt/below", "inlink/nested",
					"nothing", "dir/nothing", "dir/pipe/below", badDir + "/nothing",
					// Through a symlink, which is never followed: inlink leads to dir.
					"inlink/a.txt", "dir/link/passwd"} {
					errs := map[string]error{}
					_, errs["Stat"] = r.Stat(ctx, id, p)
					if i < 3 { // the others the same way (restic runs are slow)
						_, errs["List"] = r.List(ctx, id, p)
						_, errs["Tar"] = r.Tar(ctx, id, p, io.Discard)
					}
					for op, err := range errs {
						if !errors.Is(err, ErrPathNotInSnapshot) {
							t.Errorf("%s(%q): err = %v, want ErrPathNotInSnapshot", op, p, err)
							continue
						}
						if want := fmt.Sprintf("path %q is not in snapshot %s", p, id); err.Error() != want {
							t.Errorf("%s(%q): message %q, want %q", op, p, err, want)
						}
					}
				}
			})

			t.Run("UnknownSnapshot", func(t *testing.T) {
				unknown := strings.Repeat("ab", 32)
				_, statErr := r.Stat(ctx, unknown, "")
				_, listErr := r.List(ctx, unknown, "dir")
				_, tarErr := r.Tar(ctx, unknown, "", io.Discard)
				for op, err := range map[string]error{"Stat": statErr, "List": listErr, "Tar": tarErr} {
					if !errors.Is(err, ErrSnapshotNotFound) || !strings.Contains(err.Error(), unknown) {
						t.Errorf("%s of an unknown snapshot: err = %v, want ErrSnapshotNotFound naming it", op, err)
					}
				}
			})

			t.Run("BadPaths", func(t *testing.T) {
				for _, p := range []string{"/dir", "dir/", "../etc", "dir/../top.txt", "."} {
					_, statErr := r.Stat(ctx, id, p)
					_, listErr := r.List(ctx, id, p)
					_, tarErr := r.Tar(ctx, id, p, io.Discard)
					for op, err := range map[string]error{"Stat": statErr, "List": listErr, "Tar": tarErr} {
						if err == nil || errors.Is(err, ErrPathNotInSnapshot) {
							t.Errorf("%s(%q): err = %v, want the path refused", op, p, err)
						}
					}
				}
			})

			t.Run("CancelStopsTar", func(t *testing.T) {
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				// Cancelled in the middle of big.bin's content.
				w := &cancellingWriter{cancel: cancel, after: 512 << 10}
				start := time.Now()
				_, err := r.Tar(cctx, id, "big.bin", w)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Tar cancelled: err = %v, want context.Canceled", err)
				}
				if n := w.n.Load(); n > w.after+1<<20 {
					t.Errorf("Tar went on after its context was cancelled: %d bytes written, cancelled at %d", n, w.after)
				}
				if d := time.Since(start); d > 20*time.Second {
					t.Errorf("Tar took %s to stop after its context was cancelled", d)
				}
			})

			t.Run("WriterErrorStopsTar", func(t *testing.T) {
				errFull := errors.New("the client went away")
				w := &failingWriter{after: 1 << 20, err: errFull}
				_, err := r.Tar(ctx, id, "big.bin", w)
				if !errors.Is(err, errFull) {
					t.Errorf("Tar into a failing writer: err = %v, want the writer's error", err)
				}
			})
		})
	}
}

// cancellingWriter cancels its context once it took after bytes, and goes on
// counting what it is given.
type cancellingWriter struct {
	cancel func()
	after  int64
	n      atomic.Int64
}

func (w *cancellingWriter) Write(p []byte) (int, error) {
	if w.n.Add(int64(len(p))) >= w.after {
		w.cancel()
	}
	return len(p), nil
}

// failingWriter fails every write once it took after bytes.
type failingWriter struct {
	after, n int64
	err      error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n >= w.after {
		return 0, w.err
	}
	w.n += int64(len(p))
	return len(p), nil
}

// TestValidateBrowsePath: the root, relative paths and names that are not UTF-8 are
// browsable; what could name a place outside the snapshot, or is not one path, is not.
func TestValidateBrowsePath(t *testing.T) {
	for _, c := range []struct {
		path string
		ok   bool
	}{
		{"", true},
		{"data", true},
		{"data/2026/file.txt", true},
		{"bad-\xff", true},
		{"..data", true},
		{"data..", true},
		{".hidden/x", true},
		{"a b/ c", true},
		{strings.Repeat("n/", 2000) + "n", true},
		{"/data", false},
		{"data/", false},
		{"data//x", false},
		{".", false},
		{"..", false},
		{"./data", false},
		{"data/.", false},
		{"data/../etc", false},
		{"../etc", false},
		{"da\x00ta", false},
		{strings.Repeat("n/", 2100) + "n", false},
	} {
		err := ValidateBrowsePath(c.path)
		if (err == nil) != c.ok {
			t.Errorf("ValidateBrowsePath(%q) = %v, want ok %v", c.path, err, c.ok)
		}
	}
}
