// Package kopiarestore is the kopia restore.Output Holdfast restores through: every
// entry of the snapshot is written by a confinedfs.Writer, so a snapshot cannot make
// kopia write outside the volume, whatever its entry names or the volume's symlinks.
package kopiarestore

import (
	"context"
	"io"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/restore"

	"github.com/holdfast-dev/holdfast/internal/confinedfs"
)

// Output implements restore.Output on a confinedfs.Writer. Existing files are always
// overwritten: a restore puts the snapshot's content in place.
type Output struct {
	w *confinedfs.Writer
}

var _ restore.Output = (*Output)(nil)

// New returns an Output writing through w.
func New(w *confinedfs.Writer) *Output { return &Output{w: w} }

// Parallelizable lets kopia restore files in parallel: the Writer is safe for
// concurrent use on different paths.
func (o *Output) Parallelizable() bool { return true }

// BeginDirectory makes the directory before its entries are written.
func (o *Output) BeginDirectory(_ context.Context, rel string, _ fs.Directory) error {
	return o.w.Mkdir(rel)
}

// WriteDirEntry is not needed for a file system output.
func (o *Output) WriteDirEntry(context.Context, string, *snapshot.DirEntry, fs.Directory) error {
	return nil
}

// FinishDirectory applies the directory's metadata after its entries, so its
// modification time is not disturbed by them.
func (o *Output) FinishDirectory(_ context.Context, rel string, e fs.Directory) error {
	return o.w.SetMetadata(rel, meta(e, false))
}

// WriteFile writes a file's content and metadata.
func (o *Output) WriteFile(ctx context.Context, rel string, f fs.File, progress restore.FileWriteProgress) error {
	r, err := f.Open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	var src io.Reader = r
	if progress != nil {
		src = &progressReader{r: r, report: progress}
	}
	if _, err := o.w.WriteFile(rel, src); err != nil {
		return err
	}
	return o.w.SetMetadata(rel, meta(f, false))
}

// FileExists reports false so that every file is written.
func (o *Output) FileExists(context.Context, string, fs.File) bool { return false }

// CreateSymlink recreates a symlink with its target as stored.
func (o *Output) CreateSymlink(ctx context.Context, rel string, e fs.Symlink) error {
	target, err := e.Readlink(ctx)
	if err != nil {
		return err
	}
	if err := o.w.Symlink(rel, target); err != nil {
		return err
	}
	return o.w.SetMetadata(rel, meta(e, true))
}

// SymlinkExists reports false so that every symlink is written.
func (o *Output) SymlinkExists(context.Context, string, fs.Symlink) bool { return false }

// Close has nothing to release; the caller closes the Writer.
func (o *Output) Close(context.Context) error { return nil }

func meta(e fs.Entry, symlink bool) confinedfs.Meta {
	owner := e.Owner()
	return confinedfs.Meta{Mode: e.Mode(), UID: int(owner.UserID), GID: int(owner.GroupID), ModTime: e.ModTime(), Symlink: symlink}
}

type progressReader struct {
	r      io.Reader
	report restore.FileWriteProgress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.report(int64(n))
	}
	return n, err
}
