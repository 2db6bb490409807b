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
	"time"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/fs/localfs"
	"github.com/kopia/kopia/fs/virtualfs"
	"github.com/kopia/kopia/snapshot"
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
// (kopia's default reads .kopiaignore) changes it, and kopia's own CACHEDIR.TAG rule
// is off: cache directories are left out, when asked, by volumeDir (see cacheDirs),
// which keeps the tag as restic does where kopia's rule would drop it. Read
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

	// caches are the cache directories whose contents are left out, found by
	// volumeMetadata before the upload; read-only during it.
	caches *cacheDirs

	// special are the special files counted: kopia lists the tree twice (once to
	// estimate its size), and each is counted once.
	mu      sync.Mutex
	special map[string]bool
	// stored are the FIFOs and device nodes in Holdfast's list of them, by path:
	// not skipped.
	stored map[string]bool
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
		CacheDirectories: c.caches.count(),
	}
}

// volumeRoot is the directory dir to back up, read through the wrappers, with
// Holdfast's own files (see volumeMetadata) at its root; its large files are written
// by reuse.
func volumeRoot(dir string, skips *skipCounter, meta *volumeMeta, reuse *reuser) (fs.Directory, error) {
	d, err := localfs.Directory(dir)
	if err != nil {
		return nil, err
	}
	skips.stored = meta.special
	skips.caches = meta.caches
	return &volumeDir{Directory: d, skips: skips, reuse: reuse, extra: meta.files}, nil
}

type volumeDir struct {
	fs.Directory
	skips *skipCounter
	reuse *reuser
	// extra, at the root only, are Holdfast's own files: name and content.
	extra []holdfastFile
}

type holdfastFile struct {
	name    string
	content []byte
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (d *volumeDir) Name() string { return kopiarestore.EncodeName(d.Directory.Name()) }

func (d *volumeDir) Iterate(ctx context.Context) (fs.DirectoryIterator, error) {
	var it fs.DirectoryIterator
	var err error
	if d.skips.caches.has(d.LocalFilesystemPath()) {
		it, err = d.iterateCache(ctx)
	} else {
		it, err = d.Directory.Iterate(ctx)
	}
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w: %w", errChangedType, err)
		}
		return nil, err
	}
	vi := &volumeIterator{it: it, skips: d.skips, reuse: d.reuse}
	for _, f := range d.extra {
		// A new reader for each listing: kopia lists the root twice.
		vi.extra = append(vi.extra, virtualfs.StreamingFileFromReader(f.name, io.NopCloser(bytes.NewReader(f.content))))
	}
	return vi, nil
}

// iterateCache lists only the tag of a cache directory, without reading the rest of
// it; an empty listing when the tag is gone.
func (d *volumeDir) iterateCache(ctx context.Context) (fs.DirectoryIterator, error) {
	e, err := d.Directory.Child(ctx, cacheDirTag)
	if errors.Is(err, fs.ErrEntryNotFound) {
		return fs.StaticIterator(nil, nil), nil
	}
	if err != nil {
		return nil, err
	}
	return fs.StaticIterator([]fs.Entry{e}, nil), nil
}

func (d *volumeDir) Child(ctx context.Context, name string) (fs.Entry, error) {
	name = kopiarestore.DecodeName(name)
	if name != cacheDirTag && d.skips.caches.has(d.LocalFilesystemPath()) {
		return nil, fs.ErrEntryNotFound
	}
	e, err := d.Directory.Child(ctx, name)
	if err != nil {
		return nil, err
	}
	return wrapVolumeEntry(e, d.skips, d.reuse, false), nil
}

type volumeIterator struct {
	it    fs.DirectoryIterator
	skips *skipCounter
	reuse *reuser
	extra []fs.Entry // listed after the directory's own entries
}

func (i *volumeIterator) Next(ctx context.Context) (fs.Entry, error) {
	for {
		e, err := i.it.Next(ctx)
		if err != nil {
			return nil, err
		}
		if e == nil {
			if len(i.extra) == 0 {
				return nil, nil
			}
			e, i.extra = i.extra[0], i.extra[1:]
			return e, nil
		}
		if w := wrapVolumeEntry(e, i.skips, i.reuse, true); w != nil {
			return w, nil
		}
	}
}

func (i *volumeIterator) Close() { i.it.Close() }

// wrapVolumeEntry returns e read through the wrappers, or nil for an entry that kopia
// cannot store (counted when count is set): a socket, a FIFO or a device node.
func wrapVolumeEntry(e fs.Entry, skips *skipCounter, reuse *reuser, count bool) fs.Entry {
	switch v := e.(type) {
	case fs.Directory:
		return &volumeDir{Directory: v, skips: skips, reuse: reuse}
	case fs.File:
		return &volumeFile{File: v, reuse: reuse}
	case fs.Symlink:
		return &volumeSymlink{Symlink: v}
	case fs.ErrorEntry:
		if !errors.Is(v.ErrorInfo(), fs.ErrUnknown) {
			return e
		}
		if count && !skips.stored[v.LocalFilesystemPath()] {
			skips.countSpecial(v.LocalFilesystemPath(), v.Mode())
		}
		e.Close()
		return nil
	}
	return e
}

type volumeFile struct {
	fs.File
	reuse *reuser
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (f *volumeFile) Name() string { return kopiarestore.EncodeName(f.File.Name()) }

// DirEntryOrNil is kopia's uploader's hook for a file whose entry is made elsewhere:
// a large file is written by the reusing writer (see reuser), any other by kopia.
func (f *volumeFile) DirEntryOrNil(ctx context.Context) (*snapshot.DirEntry, error) {
	if f.reuse == nil {
		return nil, nil
	}
	return f.reuse.entry(ctx, f)
}

type volumeSymlink struct {
	fs.Symlink
}

// Name is the name kopia stores (see kopiarestore.EncodeName).
func (l *volumeSymlink) Name() string { return kopiarestore.EncodeName(l.Symlink.Name()) }

// beforeOpen, when set by a test, runs before a file of the volume is opened.
var beforeOpen func(path string)

// afterMetadata, when set by a test, runs between volumeMetadata and the upload: the
// volume changes there as a live one does, and the snapshot's lists of attributes,
// special files and links then name entries its tree holds otherwise or not at all.
var afterMetadata func(dir string)

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

// volumeMeta is what kopia cannot store of a volume, read before the upload.
type volumeMeta struct {
	// files are Holdfast's own files for the snapshot's root: the attributes file,
	// the list of FIFOs and device nodes and that of hard links (kopiarestore), when
	// there is anything to put in them.
	files []holdfastFile
	// special are the paths of the FIFOs and device nodes listed.
	special map[string]bool
	bytes   int64
	// regularFiles and regularBytes count the volume's regular files as the walk met
	// them: the backup's progress totals, in place of kopia's own estimate, which
	// walked the whole volume a second time (see kopiaProgress.Enabled).
	regularFiles, regularBytes int64
	// caches are the cache directories the walk found (none unless asked): it read
	// only their tags, and so does the upload.
	caches *cacheDirs
}

// volumeMetadata walks dir once and reads what kopia has no field for: the extended
// attributes of every entry (SELinux labels excepted: the target's policy sets those),
// the FIFOs and device nodes, and the names of files with more than one. An entry
// deleted meanwhile is passed over, as the backup passes over it. With excludeCaches
// it also finds the cache directories, and reads of each only the tag: what is left
// out of the snapshot has no attributes, special files or links in it.
func volumeMetadata(dir string, excludeCaches bool) (*volumeMeta, error) {
	var attrs, special bytes.Buffer
	meta := &volumeMeta{special: map[string]bool{}, caches: newCacheDirs(excludeCaches)}
	type inode struct{ dev, ino uint64 }
	names := map[inode][]string{} // of files with more than one name
	var inodes []inode            // in the order met
	visit := func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return ignoreAbsent(err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return ignoreAbsent(err)
			}
			meta.regularFiles++
			meta.regularBytes += st.Size
			if st.Nlink > 1 {
				k := inode{st.Dev, st.Ino}
				if _, ok := names[k]; !ok {
					inodes = append(inodes, k)
				}
				names[k] = append(names[k], rel)
			}
		}
		if t := d.Type(); t&(iofs.ModeNamedPipe|iofs.ModeDevice) != 0 {
			s, ok, err := specialFile(p, rel)
			if err != nil || !ok {
				return err
			}
			meta.special[p] = true
			if err := kopiarestore.WriteSpecial(&special, s); err != nil {
				return err
			}
		}
		a, err := entryAttributes(p)
		if err != nil || len(a) == 0 {
			return err
		}
		return kopiarestore.WriteAttributes(&attrs, rel, a)
	}
	// An error names the entry: the only ones left are not those of an entry that
	// changed while it was read.
	err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err := visit(p, d, err); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err != nil || !d.IsDir() || !meta.caches.visit(p) {
			return nil
		}
		if tag, e := tagEntry(p); e != nil {
			if err := visit(tag, e, nil); err != nil {
				return fmt.Errorf("%s: %w", tag, err)
			}
		}
		return filepath.SkipDir
	})
	if err != nil {
		return nil, fmt.Errorf("reading the attributes and special files of %s: %w", dir, err)
	}
	if attrs.Len() > 0 {
		meta.files = append(meta.files, holdfastFile{kopiarestore.AttributesName, attrs.Bytes()})
	}
	if special.Len() > 0 {
		meta.files = append(meta.files, holdfastFile{kopiarestore.SpecialName, special.Bytes()})
	}
	var links bytes.Buffer
	for i, k := range inodes {
		if len(names[k]) < 2 {
			continue // its other names are outside the volume
		}
		for _, n := range names[k] {
			if err := kopiarestore.WriteLink(&links, i, n); err != nil {
				return nil, err
			}
		}
	}
	if links.Len() > 0 {
		meta.files = append(meta.files, holdfastFile{kopiarestore.LinksName, links.Bytes()})
	}
	for _, f := range meta.files {
		meta.bytes += int64(len(f.content))
	}
	return meta, nil
}

// specialFile describes the FIFO or device node at p; not ok when it is gone.
func specialFile(p, rel string) (kopiarestore.Special, bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return kopiarestore.Special{}, false, ignoreAbsent(err)
	}
	s := kopiarestore.Special{Path: rel, UID: int(st.Uid), GID: int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), Mode: iofs.FileMode(st.Mode & 0o777)}
	if st.Mode&unix.S_ISUID != 0 {
		s.Mode |= iofs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		s.Mode |= iofs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		s.Mode |= iofs.ModeSticky
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		s.Mode |= iofs.ModeNamedPipe
	case unix.S_IFCHR:
		s.Mode |= iofs.ModeDevice | iofs.ModeCharDevice
	case unix.S_IFBLK:
		s.Mode |= iofs.ModeDevice
	default:
		return kopiarestore.Special{}, false, nil // changed meanwhile: the upload sees what it is
	}
	if s.Mode&iofs.ModeDevice != 0 {
		s.Major, s.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	}
	return s, true, nil
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

// ignoreAbsent drops the errors of an entry that is gone, or that was replaced
// meanwhile by a symlink or a file on its path (ELOOP: the volume is mounted
// nosymfollow; ENOTDIR), and those of a file system without extended attributes. The
// upload then sees the entry as what it has become, and counts it.
func ignoreAbsent(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR),
		errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
		return nil
	}
	return err
}
