package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/fs/localfs"
	"github.com/kopia/kopia/fs/virtualfs"
	"github.com/kopia/kopia/snapshot/policy"
	"golang.org/x/sys/unix"

	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// A live volume changes while it is backed up: files are deleted between the listing
// of their directory and their reading (temporary files, WAL recycling, log rotation)
// and an entry can be replaced by another kind (a file by a FIFO, a directory by a
// file). Such an entry is left out of the snapshot and counted, never fatal; any other
// read error still fails the backup. kopia's own reading of a local directory follows
// a file that became a symlink and blocks for ever on one that became a FIFO, so the
// volume is read through these wrappers.

// errChangedType is an entry that is no longer of the kind its directory listed.
var errChangedType = errors.New("the entry changed its type while the backup read it")

// backupPolicy is the policy every Holdfast kopia backup runs under, whatever policy
// the repository stores: Holdfast owns what is backed up. No in-volume ignore file
// (kopia's default reads .kopiaignore) and no CACHEDIR.TAG rule changes it, and read
// errors of single entries reach kopiaProgress.Error, which skips and counts the ones
// a live volume causes and fails the backup for the others.
func backupPolicy() *policy.Policy {
	p := *policy.DefaultPolicy
	keep := policy.OptionalInt(math.MaxInt32)
	p.RetentionPolicy = policy.RetentionPolicy{
		KeepLatest: &keep, KeepHourly: &keep, KeepDaily: &keep,
		KeepWeekly: &keep, KeepMonthly: &keep, KeepAnnual: &keep,
	}
	p.FilesPolicy = policy.FilesPolicy{
		DotIgnoreFiles:         []string{},
		IgnoreCacheDirectories: policy.NewOptionalBool(false),
		OneFileSystem:          policy.NewOptionalBool(false),
	}
	p.ErrorHandlingPolicy = policy.ErrorHandlingPolicy{
		IgnoreFileErrors:      policy.NewOptionalBool(true),
		IgnoreDirectoryErrors: policy.NewOptionalBool(true),
		IgnoreUnknownTypes:    policy.NewOptionalBool(true),
	}
	return &p
}

// skipCounter counts, with atomics, what a backup left out of the snapshot.
type skipCounter struct {
	vanished, changedType, sockets, fifos, devices atomic.Int64

	// special are the special files counted: kopia lists the tree twice (once to
	// estimate its size), and each is counted once.
	mu      sync.Mutex
	special map[string]bool
}

// countSpecial counts the special file at path, once.
func (c *skipCounter) countSpecial(path string, mode os.FileMode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.special[path] {
		return
	}
	if c.special == nil {
		c.special = map[string]bool{}
	}
	c.special[path] = true
	switch {
	case mode&os.ModeSocket != 0:
		c.sockets.Add(1)
	case mode&os.ModeNamedPipe != 0:
		c.fifos.Add(1)
	default:
		c.devices.Add(1)
	}
}

func (c *skipCounter) result() Skipped {
	return Skipped{
		Vanished: c.vanished.Load(), ChangedType: c.changedType.Load(),
		Sockets: c.sockets.Load(), FIFOs: c.fifos.Load(), Devices: c.devices.Load(),
	}
}

// volumeRoot is the directory dir to back up, read through the wrappers, with the
// attributes file (kopiarestore.AttributesName) holding attributes at its root.
func volumeRoot(dir string, skips *skipCounter, attributes []byte) (fs.Directory, error) {
	d, err := localfs.Directory(dir)
	if err != nil {
		return nil, err
	}
	return &volumeDir{Directory: d, skips: skips, attributes: attributes}, nil
}

type volumeDir struct {
	fs.Directory
	skips *skipCounter
	// attributes, at the root only, is the content of the attributes file.
	attributes []byte
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (d *volumeDir) Name() string { return kopiarestore.EncodeName(d.Directory.Name()) }

func (d *volumeDir) Iterate(ctx context.Context) (fs.DirectoryIterator, error) {
	it, err := d.Directory.Iterate(ctx)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w: %w", errChangedType, err)
		}
		return nil, err
	}
	vi := &volumeIterator{it: it, skips: d.skips}
	if d.attributes != nil {
		// A new reader for each listing: kopia lists the root twice.
		vi.extra = virtualfs.StreamingFileFromReader(kopiarestore.AttributesName, io.NopCloser(bytes.NewReader(d.attributes)))
	}
	return vi, nil
}

func (d *volumeDir) Child(ctx context.Context, name string) (fs.Entry, error) {
	e, err := d.Directory.Child(ctx, kopiarestore.DecodeName(name))
	if err != nil {
		return nil, err
	}
	return wrapVolumeEntry(e, d.skips, false), nil
}

type volumeIterator struct {
	it    fs.DirectoryIterator
	skips *skipCounter
	extra fs.Entry // listed after the directory's own entries
}

func (i *volumeIterator) Next(ctx context.Context) (fs.Entry, error) {
	for {
		e, err := i.it.Next(ctx)
		if err != nil {
			return nil, err
		}
		if e == nil {
			e, i.extra = i.extra, nil
			return e, nil
		}
		if w := wrapVolumeEntry(e, i.skips, true); w != nil {
			return w, nil
		}
	}
}

func (i *volumeIterator) Close() { i.it.Close() }

// wrapVolumeEntry returns e read through the wrappers, or nil for an entry that kopia
// cannot store (counted when count is set): a socket, a FIFO or a device node.
func wrapVolumeEntry(e fs.Entry, skips *skipCounter, count bool) fs.Entry {
	switch v := e.(type) {
	case fs.Directory:
		return &volumeDir{Directory: v, skips: skips}
	case fs.File:
		return &volumeFile{File: v}
	case fs.Symlink:
		return &volumeSymlink{Symlink: v}
	case fs.ErrorEntry:
		if !errors.Is(v.ErrorInfo(), fs.ErrUnknown) {
			return e
		}
		if count {
			skips.countSpecial(v.LocalFilesystemPath(), v.Mode())
		}
		e.Close()
		return nil
	}
	return e
}

type volumeFile struct {
	fs.File
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (f *volumeFile) Name() string { return kopiarestore.EncodeName(f.File.Name()) }

type volumeSymlink struct {
	fs.Symlink
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (l *volumeSymlink) Name() string { return kopiarestore.EncodeName(l.Symlink.Name()) }

// beforeOpen, when set by a test, runs before a file of the volume is opened.
var beforeOpen func(path string)

// Open opens the file without following a symlink and without blocking on a FIFO, and
// checks that it is still a regular file.
func (f *volumeFile) Open(context.Context) (fs.Reader, error) {
	path := f.LocalFilesystemPath()
	if beforeOpen != nil {
		beforeOpen(path)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP { // O_NOFOLLOW on a symlink
			return nil, fmt.Errorf("%w: %s is now a symlink", errChangedType, path)
		}
		return nil, &iofs.PathError{Op: "open", Path: path, Err: err}
	}
	file := os.NewFile(uintptr(fd), path)
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		_ = file.Close()
		return nil, fmt.Errorf("%w: %s is now a %s", errChangedType, path, typeName(st.Mode()))
	}
	return &volumeReader{File: file, entry: f}, nil
}

type volumeReader struct {
	*os.File
	entry fs.Entry
}

func (r *volumeReader) Entry() (fs.Entry, error) { return r.entry, nil }

func typeName(m iofs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&iofs.ModeSymlink != 0:
		return "symlink"
	case m&iofs.ModeNamedPipe != 0:
		return "FIFO"
	case m&iofs.ModeSocket != 0:
		return "socket"
	case m&iofs.ModeDevice != 0:
		return "device node"
	}
	return "regular file"
}

// volumeAttributes reads the extended attributes of every entry of dir (SELinux
// labels excepted: the target's policy sets those) and returns them in the form of
// the attributes file, or nil when no entry has any. An entry deleted meanwhile is
// passed over, as the backup passes over it.
func volumeAttributes(dir string) ([]byte, error) {
	var out bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) {
				return nil
			}
			return err
		}
		attrs, err := entryAttributes(p)
		if err != nil || len(attrs) == 0 {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		return kopiarestore.WriteAttributes(&out, rel, attrs)
	})
	if err != nil {
		return nil, fmt.Errorf("reading the extended attributes of %s: %w", dir, err)
	}
	if out.Len() == 0 {
		return nil, nil
	}
	return out.Bytes(), nil
}

// entryAttributes are the extended attributes of the entry at p itself (never of a
// symlink's target); none where the file system has none or the entry is gone.
func entryAttributes(p string) (map[string][]byte, error) {
	var attrs map[string][]byte
	for range 3 { // the list may grow between asking its size and reading it
		size, err := unix.Llistxattr(p, nil)
		if err != nil || size == 0 {
			return nil, ignoreAbsent(err)
		}
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, ignoreAbsent(err)
		}
		attrs = map[string][]byte{}
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name == "" || name == "security.selinux" {
				continue
			}
			v, err := getxattr(p, name)
			if err == unix.ENODATA {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, ignoreAbsent(err)
			}
			attrs[name] = v
		}
		return attrs, nil
	}
	return nil, fmt.Errorf("the extended attributes of %s keep changing", p)
}

func getxattr(p, name string) ([]byte, error) {
	for range 3 {
		size, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE {
			continue
		}
		return buf[:n], err
	}
	return nil, unix.ERANGE
}

// ignoreAbsent drops the errors of an entry that is gone or of a file system without
// extended attributes.
func ignoreAbsent(err error) error {
	if err == unix.ENOENT || err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil
	}
	return err
}
