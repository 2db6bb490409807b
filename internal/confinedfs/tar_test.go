package confinedfs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExtractRestoresSpecialFilesAndAttributes: FIFOs and device nodes come back as
// what they were (a device only with the privilege to make it, else counted), also
// when the stream writes them as empty files and opts.Special says what they are (as
// restic dump does); extended attributes in SCHILY.xattr PAX records are applied, and
// one the file system refuses is counted, not fatal.
func TestExtractRestoresSpecialFilesAndAttributes(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stream := tarOf(t,
		entry{name: "d/", typ: tar.TypeDir, mode: 0o755, pax: map[string]string{"SCHILY.xattr.user.dir": "on the dir"}},
		entry{name: "d/f", typ: tar.TypeReg, mode: 0o644, body: []byte("x"),
			pax: map[string]string{"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.bin": "\x00\xff", "SCHILY.xattr.nonsense.ns": "refused", "SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0"}},
		entry{name: "pipe", typ: tar.TypeFifo, mode: 0o600},
		entry{name: "null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		entry{name: "looks-empty-but-fifo", typ: tar.TypeReg, mode: 0o640},
		entry{name: "looks-empty-but-device", typ: tar.TypeReg, mode: 0o640},
		entry{name: "really-empty", typ: tar.TypeReg, mode: 0o640},
	)
	stats, err := ExtractTar(context.Background(), w, stream, TarOptions{Special: map[string]Meta{
		"looks-empty-but-fifo":   {Mode: fs.ModeNamedPipe | 0o640},
		"looks-empty-but-device": {Mode: fs.ModeDevice | fs.ModeCharDevice | 0o640},
		"d/left-out-fifo":        {Mode: fs.ModeNamedPipe | 0o604, UID: os.Getuid(), GID: os.Getgid(), ModTime: time.Unix(1700000000, 5)},
		"d/left-out-device":      {Mode: fs.ModeDevice | 0o600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	root := os.Geteuid() == 0
	want := TarStats{Dirs: 1, Files: 2, FIFOs: 3, DevicesSkipped: 2, AttributesRefused: 1}
	if root {
		want.Devices = 1
	} else {
		want.DevicesSkipped++
	}
	if stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
	if st, err := os.Lstat(filepath.Join(dir, "d")); err != nil || !st.ModTime().Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("d: time %v (err %v): the FIFO left out of the stream was made after the directory's time was set", st.ModTime(), err)
	}
	if st, err := os.Lstat(filepath.Join(dir, "d/left-out-fifo")); err != nil || !st.ModTime().Equal(time.Unix(1700000000, 5)) {
		t.Errorf("d/left-out-fifo: %v (err %v), want its own time", st, err)
	}
	for name, mode := range map[string]os.FileMode{"pipe": os.ModeNamedPipe | 0o600, "looks-empty-but-fifo": os.ModeNamedPipe | 0o640, "really-empty": 0o640, "d/left-out-fifo": os.ModeNamedPipe | 0o604} {
		if st, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), mode)
		}
	}
	if root {
		if st, err := os.Lstat(filepath.Join(dir, "null")); err != nil {
			t.Errorf("null: %v", err)
		} else if st.Mode()&os.ModeCharDevice == 0 || st.Sys().(*syscall.Stat_t).Rdev != unix.Mkdev(1, 3) {
			t.Errorf("null: %v, want the character device 1,3", st.Mode())
		}
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d/f"), "security.selinux", make([]byte, 256)); err == nil && n > 0 {
		// Only an SELinux system labels every file; the stream's label must not be the one.
		buf := make([]byte, n)
		_, _ = unix.Lgetxattr(filepath.Join(dir, "d/f"), "security.selinux", buf)
		if string(bytes.TrimRight(buf, "\x00")) == "system_u:object_r:etc_t:s0" {
			t.Error("d/f got the SELinux label of the stream; the target's policy sets labels")
		}
	}
	for name, attrs := range map[string]map[string]string{"d": {"user.dir": "on the dir"}, "d/f": {"user.a": "1", "user.bin": "\x00\xff"}} {
		for attr, value := range attrs {
			buf := make([]byte, 256)
			n, err := unix.Lgetxattr(filepath.Join(dir, name), attr, buf)
			if err != nil || string(buf[:n]) != value {
				t.Errorf("%s %s = %q (err %v), want %q", name, attr, buf[:max(n, 0)], err, value)
			}
		}
	}
}

// TestExtractRestoresGNUSparseEntries: an old-GNU sparse entry (type 'S') is restored
// as the file it stands for, sparse, not skipped.
func TestExtractRestoresGNUSparseEntries(t *testing.T) {
	const size = 1<<20 + 4
	var stream bytes.Buffer
	stream.Write(gnuSparseHeader(t, "gnu.sparse", size, 1<<20, 4))
	data := make([]byte, 512)
	copy(data, "tail")
	stream.Write(data)
	stream.Write(make([]byte, 1024))
	dir := t.TempDir()
	stats, err := extract(t, dir, &stream)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files != 1 || stats.Skipped != 0 {
		t.Errorf("stats = %+v, want one file", stats)
	}
	got, err := os.ReadFile(filepath.Join(dir, "gnu.sparse"))
	if want := append(make([]byte, 1<<20), "tail"...); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("gnu.sparse: %d bytes (err %v), want 1 MiB of zeros and \"tail\"", len(got), err)
	}
	st, _ := os.Stat(filepath.Join(dir, "gnu.sparse"))
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= size {
		t.Errorf("gnu.sparse uses %d bytes on disk for %d: not sparse", blocks, size)
	}
}

// gnuSparseHeader is an old-GNU sparse header (archive/tar cannot write one) for a
// file of realSize bytes whose only data is length bytes at offset.
func gnuSparseHeader(t *testing.T, name string, realSize, offset, length int64) []byte {
	t.Helper()
	h := make([]byte, 512)
	octal := func(at, width int, v int64) {
		copy(h[at:at+width], fmt.Sprintf("%0*o\x00", width-1, v))
	}
	copy(h[0:], name)
	octal(100, 8, 0o644)
	octal(108, 8, int64(os.Getuid()))
	octal(116, 8, int64(os.Getgid()))
	octal(124, 12, length) // the data stored
	octal(136, 12, 1767323045)
	h[156] = 'S'
	copy(h[257:], "ustar  \x00")
	octal(386, 12, offset) // sparse[0]
	octal(398, 12, length)
	octal(483, 12, realSize)
	for i := 148; i < 156; i++ {
		h[i] = ' '
	}
	var sum int64
	for _, b := range h {
		sum += int64(b)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// TestExtractMakesHardLinksOfCopies: a stream that writes every name of a hard-linked
// file as a copy (restic dump) comes back with one file of three names when
// opts.HardLinks groups them; other files stay apart.
func TestExtractMakesHardLinksOfCopies(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var links HardLinks
	for _, f := range []struct {
		rel string
		ino uint64
	}{{"a", 7}, {"d/b", 7}, {"c", 7}, {"other", 8}} {
		links.Add(f.rel, f.ino)
	}
	body := []byte("one inode")
	stream := tarOf(t,
		entry{name: "a", typ: tar.TypeReg, mode: 0o644, body: body},
		entry{name: "d/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "d/b", typ: tar.TypeReg, mode: 0o644, body: body},
		entry{name: "c", typ: tar.TypeReg, mode: 0o644, body: body},
		entry{name: "other", typ: tar.TypeReg, mode: 0o644, body: body},
	)
	stats, err := ExtractTar(context.Background(), w, stream, TarOptions{HardLinks: &links})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files != 2 || stats.HardLinks != 2 || links.Groups() != 1 {
		t.Errorf("stats = %+v, groups %d; want 2 files, 2 links, 1 group", stats, links.Groups())
	}
	a, _ := os.Stat(filepath.Join(dir, "a"))
	for _, name := range []string{"d/b", "c"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !os.SameFile(a, st) {
			t.Errorf("%s is not a hard link of a (err %v)", name, err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "other")); os.SameFile(a, st) {
		t.Error("other is linked to a")
	}
}
