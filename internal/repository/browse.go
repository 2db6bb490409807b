package repository

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// A browse reads inside a snapshot without restoring it: Stat, List and Tar of the
// Repository interface, which a read-only browse session serves to a user's machine.
// Both uploaders describe entries alike: names as the volume had them (kopia's
// encoded names decoded), Holdfast's own files at a kopia snapshot's root left out,
// symlinks described and never followed, and FIFOs and device nodes (which the tar
// stream leaves out) listed as "other".

// EntryType is the kind of an entry of a snapshot.
type EntryType string

// Kinds of entries.
const (
	EntryFile    EntryType = "file"
	EntryDir     EntryType = "dir"
	EntrySymlink EntryType = "symlink"
	// EntryOther is a FIFO, a device node or a socket: listed, never in a tar stream.
	EntryOther EntryType = "other"
)

// Entry describes one entry of a snapshot.
type Entry struct {
	// Name is the entry's name as the volume had it (any bytes but "/" and NUL);
	// the snapshot's root is ".".
	Name string
	Type EntryType
	// Size is a file's size; for a directory the total size of the files below it
	// when the snapshot records it (kopia's directory summaries), else -1; 0 for
	// symlinks and other entries.
	Size int64
	// Mode is the permission bits, with os.ModeSetuid, os.ModeSetgid and
	// os.ModeSticky; no type bits (see Type).
	Mode    os.FileMode
	ModTime time.Time
	// Target is a symlink's target, as stored.
	Target string
}

// TarResult counts what Tar wrote, and what it left out.
type TarResult struct {
	// Files, Dirs and Symlinks are the entries written (Dirs includes the entry's
	// own directory); Bytes are the files' content bytes.
	Files, Dirs, Symlinks, Bytes int64
	// Skipped are the special files (FIFOs, device nodes) below the entry that the
	// stream leaves out.
	Skipped int64
}

// ErrPathNotInSnapshot is what errors.Is finds in the error of a browse (or a partial
// restore) of a path the snapshot does not hold: missing, or below an entry that is
// not a directory (a symlink is never followed).
var ErrPathNotInSnapshot = kopiarestore.ErrPathNotInSnapshot

// maxBrowsePath bounds a browse path: the longest path Linux resolves (PATH_MAX).
const maxBrowsePath = 4096

// ValidateBrowsePath checks a path of a browse: "" is the snapshot's root; any other
// path is relative to it and follows the API's rules for a restore path
// (v1alpha1.RestorePath.Validate: no leading or trailing "/", no empty, "." or ".."
// segment), holds no NUL and is at most 4096 bytes. Names need not be UTF-8.
func ValidateBrowsePath(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > maxBrowsePath {
		return fmt.Errorf("the path is %d bytes long; at most %d are allowed", len(p), maxBrowsePath)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("path %q holds a NUL byte", p)
	}
	return v1.RestorePath(p).Validate()
}

// notInSnapshot is the error of a browse of path p, which snapshot id lacks.
func notInSnapshot(p, id string) error {
	return &kopiarestore.PathNotInSnapshotError{Path: p, Snapshot: id, Browse: true}
}

// snapshotNotFound is the error of a browse of a snapshot repository url lacks.
func snapshotNotFound(id, url string, cause error) error {
	return newError(ErrSnapshotNotFound, fmt.Sprintf("Snapshot %s does not exist in %s", id, url), cause)
}

// browseName is the name of the entry at p in listings and tar streams.
func browseName(p string) string {
	if p == "" {
		return "."
	}
	return path.Base(p)
}

// checkStoredName refuses a name a snapshot holds that no file system entry can
// have: written into a tar stream it would name another place ("..", "a/b").
func checkStoredName(name, dir, snapshotID string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return newError(ErrDamaged, fmt.Sprintf("Snapshot %s holds an entry named %q in %q, which cannot be a file name", snapshotID, name, dir), nil)
	}
	return nil
}

// modeBits keeps the permission, setuid, setgid and sticky bits of m.
func modeBits(m os.FileMode) os.FileMode {
	return m & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}

// browseTar writes the tar stream of a browse and counts what it wrote. Names are
// written as they are (any bytes): archive/tar picks USTAR, PAX or GNU headers as
// each name needs, and its reader gives the bytes back.
type browseTar struct {
	tw  *tar.Writer
	res TarResult
}

func newBrowseTar(w io.Writer) *browseTar { return &browseTar{tw: tar.NewWriter(w)} }

func (t *browseTar) header(name string, typ byte, e Entry, uid, gid int) *tar.Header {
	mode := int64(e.Mode.Perm())
	if e.Mode&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if e.Mode&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if e.Mode&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	return &tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: e.ModTime, Uid: uid, Gid: gid}
}

// dir writes the header of directory name.
func (t *browseTar) dir(name string, e Entry, uid, gid int) error {
	if err := t.tw.WriteHeader(t.header(name+"/", tar.TypeDir, e, uid, gid)); err != nil {
		return err
	}
	t.res.Dirs++
	return nil
}

// symlink writes symlink name.
func (t *browseTar) symlink(name string, e Entry, uid, gid int) error {
	h := t.header(name, tar.TypeSymlink, e, uid, gid)
	h.Linkname = e.Target
	if err := t.tw.WriteHeader(h); err != nil {
		return err
	}
	t.res.Symlinks++
	return nil
}

// file writes file name of e.Size bytes, read from content as it is copied.
func (t *browseTar) file(name string, e Entry, uid, gid int, content io.Reader) error {
	h := t.header(name, tar.TypeReg, e, uid, gid)
	h.Size = e.Size
	if err := t.tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(t.tw, content)
	t.res.Bytes += n
	if err != nil {
		return err
	}
	if n != e.Size {
		return fmt.Errorf("%s holds %d bytes, not the %d its entry records", name, n, e.Size)
	}
	t.res.Files++
	return nil
}

// close ends the stream.
func (t *browseTar) close() error { return t.tw.Close() }

// ctxReader stops reading once ctx is done, so that copying a large file stops
// promptly when the browse is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
