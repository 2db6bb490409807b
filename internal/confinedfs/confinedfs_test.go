package confinedfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       []byte
	pax        map[string]string
	major      int64
	minor      int64
}

func tarOf(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)),
			ModTime: mtime, Uid: os.Getuid(), Gid: os.Getgid(), PAXRecords: e.pax, Devmajor: e.major, Devminor: e.minor}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func extract(t *testing.T, dir string, r *bytes.Buffer) (TarStats, error) {
	t.Helper()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return ExtractTar(context.Background(), w, r, TarOptions{})
}

func TestExtractRestoresTreeModesLinksAndSparseFiles(t *testing.T) {
	dir := t.TempDir()
	sparse := make([]byte, 8<<20) // 8 MiB with data only at both ends
	copy(sparse, "head")
	copy(sparse[len(sparse)-4:], "tail")
	stats, err := extract(t, dir, tarOf(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "a/", typ: tar.TypeDir, mode: 0o750},
		entry{name: "a/secret", typ: tar.TypeReg, mode: 0o600, body: []byte("s3cr3t")},
		entry{name: "a/run.sh", typ: tar.TypeReg, mode: 0o755, body: []byte("#!/bin/sh\n")},
		entry{name: "a/empty", typ: tar.TypeReg, mode: 0o644},
		entry{name: "a/link", typ: tar.TypeSymlink, link: "secret"},
		entry{name: "a/outside", typ: tar.TypeSymlink, link: "/etc/passwd"},
		entry{name: "a/hard", typ: tar.TypeLink, link: "a/secret"},
		entry{name: "big.sparse", typ: tar.TypeReg, mode: 0o644, body: sparse},
		entry{name: "fifo", typ: tar.TypeFifo, mode: 0o644},
	))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files != 4 || stats.Dirs != 2 || stats.Symlinks != 2 || stats.HardLinks != 1 || stats.FIFOs != 1 || stats.Skipped != 0 {
		t.Errorf("stats = %+v", stats)
	}
	if st, err := os.Lstat(filepath.Join(dir, "fifo")); err != nil {
		t.Errorf("fifo not restored: %v", err)
	} else if st.Mode() != os.ModeNamedPipe|0o644 {
		t.Errorf("fifo restored as %v, want a FIFO with mode 0644", st.Mode())
	}
	for name, mode := range map[string]os.FileMode{"a": 0o750 | os.ModeDir, "a/secret": 0o600, "a/run.sh": 0o755, "a/empty": 0o644} {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s mode = %v, want %v", name, st.Mode(), mode)
		}
		if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !st.ModTime().Equal(want) {
			t.Errorf("%s mtime = %v, want %v", name, st.ModTime(), want)
		}
	}
	if target, _ := os.Readlink(filepath.Join(dir, "a/outside")); target != "/etc/passwd" {
		t.Errorf("symlink target = %q, stored as-is expected", target)
	}
	a, _ := os.Stat(filepath.Join(dir, "a/secret"))
	b, _ := os.Stat(filepath.Join(dir, "a/hard"))
	if !os.SameFile(a, b) {
		t.Error("a/hard is not a hard link of a/secret")
	}
	got, err := os.ReadFile(filepath.Join(dir, "big.sparse"))
	if err != nil || !bytes.Equal(got, sparse) {
		t.Fatalf("sparse file content differs (err %v)", err)
	}
	st, _ := os.Stat(filepath.Join(dir, "big.sparse"))
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= int64(len(sparse)) {
		t.Errorf("big.sparse uses %d bytes on disk for %d bytes: not sparse", blocks, len(sparse))
	}
}

// TestExtractNeverWritesOutside feeds malicious snapshots: traversal names, absolute
// names, hard links to outside files, and a symlink already in the volume that points
// outside. None may write outside the volume; each fails with ErrEscape.
func TestExtractNeverWritesOutside(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		prepare func(t *testing.T, vol, outside string)
	}{
		{name: "dot-dot entry", entries: []entry{{name: "../victim", typ: tar.TypeReg, mode: 0o644, body: []byte("pwned")}}},
		{name: "nested dot-dot entry", entries: []entry{{name: "a/../../victim", typ: tar.TypeReg, mode: 0o644, body: []byte("pwned")}}},
		{name: "hard link to a file outside", entries: []entry{{name: "h", typ: tar.TypeLink, link: "../victim"}}},
		{name: "symlink in the snapshot, then a file through it", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "../"},
			{name: "esc/victim", typ: tar.TypeReg, mode: 0o644, body: []byte("pwned")},
		}},
		{name: "absolute symlink in the snapshot, then a file through it", entries: []entry{
			{name: "esc", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "esc/victim", typ: tar.TypeReg, mode: 0o644, body: []byte("pwned")},
		}},
		{name: "symlink already in the volume", entries: []entry{
			{name: "data/victim", typ: tar.TypeReg, mode: 0o644, body: []byte("pwned")},
		}, prepare: func(t *testing.T, vol, outside string) {
			if err := os.Symlink(outside, filepath.Join(vol, "data")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			vol, outside := filepath.Join(parent, "vol"), filepath.Join(parent, "outside")
			for _, d := range []string{vol, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			victim := filepath.Join(parent, "victim")
			if err := os.WriteFile(victim, []byte("original"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.prepare != nil {
				tc.prepare(t, vol, outside)
			}
			for i := range tc.entries {
				tc.entries[i].link = strings.ReplaceAll(tc.entries[i].link, "OUTSIDE", outside)
			}
			_, err := extract(t, vol, tarOf(t, tc.entries...))
			if !errors.Is(err, ErrEscape) {
				t.Errorf("err = %v, want ErrEscape", err)
			}
			if got, _ := os.ReadFile(victim); string(got) != "original" {
				t.Errorf("the file outside the volume was changed to %q", got)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("the restore wrote %d entries into a directory outside the volume", len(entries))
			}
		})
	}
}

func TestExtractReplacesWhatIsInTheWay(t *testing.T) {
	dir := t.TempDir()
	// A running pod's volume: a directory where the snapshot has a file, a file where it
	// has a directory, and a symlink where it has a file.
	if err := os.MkdirAll(filepath.Join(dir, "was-dir/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "was-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("was-file", filepath.Join(dir, "was-link")); err != nil {
		t.Fatal(err)
	}
	_, err := extract(t, dir, tarOf(t,
		entry{name: "was-dir", typ: tar.TypeReg, mode: 0o644, body: []byte("now a file")},
		entry{name: "was-file/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "was-file/inner", typ: tar.TypeReg, mode: 0o644, body: []byte("inner")},
		entry{name: "was-link", typ: tar.TypeReg, mode: 0o644, body: []byte("now a file too")},
	))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"was-dir": "now a file", "was-file/inner": "inner", "was-link": "now a file too"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
	if st, _ := os.Lstat(filepath.Join(dir, "was-link")); !st.Mode().IsRegular() {
		t.Error("was-link is still a symlink")
	}
}

// TestWriteFileWithMetadataSetsModeTimeAndContent writes through the open-file path
// that restores use, in nested directories whose handles the Writer keeps open.
func TestWriteFileWithMetadataSetsModeTimeAndContent(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mtime := time.Date(2025, 6, 7, 8, 9, 10, 11, time.UTC)
	for _, name := range []string{"top", "a/b/one", "a/b/two", "a/c/three"} {
		m := Meta{Mode: 0o640, UID: os.Getuid(), GID: os.Getgid(), ModTime: mtime}
		if _, err := w.WriteFileWithMetadata(name, strings.NewReader("content of "+name), m); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"top", "a/b/one", "a/b/two", "a/c/three"} {
		p := filepath.Join(dir, name)
		if got, err := os.ReadFile(p); err != nil || string(got) != "content of "+name {
			t.Errorf("%s = %q (%v)", name, got, err)
		}
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != 0o640 || !st.ModTime().Equal(mtime) {
			t.Errorf("%s: mode %v mtime %v, want 0640 and %v", name, st.Mode(), st.ModTime(), mtime)
		}
	}
	if w.FilesDone() != 4 {
		t.Errorf("FilesDone = %d, want 4", w.FilesDone())
	}
}

// TestKeptDirectoryHandlesFollowReplacements replaces a directory the Writer already
// wrote into: later files must land in what is at the path now, and a symlink that
// replaced the directory must not be followed out of the volume.
func TestKeptDirectoryHandlesFollowReplacements(t *testing.T) {
	parent := t.TempDir()
	vol, outside := filepath.Join(parent, "vol"), filepath.Join(parent, "outside")
	for _, d := range []string{vol, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, err := Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write := func(name string) error {
		_, err := w.WriteFileWithMetadata(name, strings.NewReader(name), Meta{Mode: 0o644, UID: -1, GID: -1})
		return err
	}
	if err := write("d/first"); err != nil {
		t.Fatal(err)
	}
	// The snapshot has a file where the directory was, then the directory again.
	if err := write("d"); err != nil {
		t.Fatal(err)
	}
	if err := w.Mkdir("d"); err != nil {
		t.Fatal(err)
	}
	if err := write("d/second"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(vol, "d")); len(entries) != 1 || entries[0].Name() != "second" {
		t.Errorf("d holds %v, want only the second file", entries)
	}
	// Now a symlink out of the volume replaces d.
	if err := w.Symlink("d", outside); err != nil {
		t.Fatal(err)
	}
	if err := write("d/third"); !errors.Is(err, ErrEscape) {
		t.Errorf("writing through the replaced directory: err = %v, want ErrEscape", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the restore wrote %d entries outside the volume", len(entries))
	}
}

// TestSetMetadataNeverFollowsASwappedSymlink replaces a directory the restore has just
// made with a symlink, as a container sharing the volume can between the directory's
// creation and the end of its restore: the metadata meant for the directory must not
// land on the link's target, the volume root or a file in it.
func TestSetMetadataNeverFollowsASwappedSymlink(t *testing.T) {
	dir := t.TempDir()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(dir, 0o750))
	must(os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	w, err := Open(dir)
	must(err)
	defer w.Close()
	for _, swap := range []struct{ name, target string }{
		{"d", "."}, {"d", "secret"}, {"sub/d", ".."}, {"sub/d", "../secret"}, {"sub/d", "."},
	} {
		must(w.Mkdir(swap.name))
		must(os.Remove(filepath.Join(dir, swap.name)))
		must(os.Symlink(swap.target, filepath.Join(dir, swap.name)))
		before := map[string]os.FileInfo{}
		for _, name := range []string{".", "secret", "sub"} {
			before[name], err = os.Stat(filepath.Join(dir, name))
			must(err)
		}
		err := w.SetMetadata(swap.name, Meta{Mode: 0o777 | fs.ModeSetuid, UID: -1, GID: -1, ModTime: old})
		if !errors.Is(err, ErrReplacedBySymlink) {
			t.Errorf("SetMetadata(%s -> %s) = %v, want ErrReplacedBySymlink", swap.name, swap.target, err)
		}
		for name, b := range before {
			a, err := os.Stat(filepath.Join(dir, name))
			must(err)
			if a.Mode() != b.Mode() || !a.ModTime().Equal(b.ModTime()) {
				t.Errorf("through %s -> %s: %s changed from %v %v to %v %v", swap.name, swap.target, name, b.Mode(), b.ModTime(), a.Mode(), a.ModTime())
			}
		}
		must(os.Remove(filepath.Join(dir, swap.name)))
	}
	// A real directory still gets its metadata.
	must(w.Mkdir("real"))
	must(w.SetMetadata("real", Meta{Mode: 0o705 | fs.ModeSticky, UID: -1, GID: -1, ModTime: old}))
	st, err := os.Stat(filepath.Join(dir, "real"))
	must(err)
	if st.Mode() != fs.ModeDir|fs.ModeSticky|0o705 || !st.ModTime().Equal(old) {
		t.Errorf("real directory: %v %v, want drwx---r-t %v", st.Mode(), st.ModTime(), old)
	}
}
