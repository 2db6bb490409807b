// Package kopiarestore is the kopia restore.Output Holdfast restores through: every
// entry of the snapshot is written by a confinedfs.Writer, so a snapshot cannot make
// kopia write outside the volume, whatever its entry names or the volume's symlinks.
// It also holds what Holdfast stores in a kopia snapshot beyond kopia's own fields:
// the encoding of file names that are not UTF-8 (names.go).
package kopiarestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/restore"

	"github.com/holdfast-dev/holdfast/internal/confinedfs"
)

// Output implements restore.Output on a confinedfs.Writer. Existing files are always
// overwritten: a restore puts the snapshot's content in place.
type Output struct {
	w      *confinedfs.Writer
	packs  *packPrefetcher
	direct *DirectReads
	rep    repo.Repository // see WithDirectoryTimes

	mu         sync.Mutex
	attributes map[string]map[string]string // from the attributes file, by decoded path
	refused    atomic.Int64

	special                      map[string][]Special // by directory; see WithSpecialFiles
	links                        *linkGroups          // see WithHardLinks
	devicesSkipped               atomic.Int64
	holdfastFiles, holdfastBytes atomic.Int64
}

// AttributesRefused is the number of extended attributes the target refused.
func (o *Output) AttributesRefused() int64 { return o.refused.Load() }

// HoldfastFiles are the files and bytes of Holdfast's own files at the snapshot's
// root (the attributes file, the lists of special files, links and chunks), which kopia's restore
// counts as restored although they are not written to the volume.
func (o *Output) HoldfastFiles() (files, bytes int64) {
	return o.holdfastFiles.Load(), o.holdfastBytes.Load()
}

// DevicesNotRestored is the number of device nodes the writer may not make.
func (o *Output) DevicesNotRestored() int64 { return o.devicesSkipped.Load() }

// WithSpecialFiles makes the Output make the FIFOs and device nodes of special (from
// ReadSpecial) when it makes their directories.
func (o *Output) WithSpecialFiles(special map[string][]Special) *Output {
	o.special = special
	return o
}

// WithHardLinks makes the Output restore the names of each group of links (from
// ReadLinks) as hard links of one file.
func (o *Output) WithHardLinks(links map[string]int) *Output {
	if len(links) > 0 {
		o.links = &linkGroups{of: links, groups: map[int]*linkGroup{}}
	}
	return o
}

// makeSpecial makes the special files of directory rel.
func (o *Output) makeSpecial(rel string) error {
	if rel == "" {
		rel = "."
	}
	for _, s := range o.special[rel] {
		var dev uint64
		if s.Mode&iofs.ModeDevice != 0 {
			dev = confinedfs.Mkdev(s.Major, s.Minor)
		}
		if err := o.w.Mknod(s.Path, s.Mode, dev); err != nil {
			if s.Mode&iofs.ModeDevice != 0 && errors.Is(err, iofs.ErrPermission) {
				o.devicesSkipped.Add(1)
				continue
			}
			return fmt.Errorf("making %s: %w", s.Path, err)
		}
		if err := o.w.SetMetadata(s.Path, confinedfs.Meta{Mode: s.Mode, UID: s.UID, GID: s.GID, ModTime: s.ModTime}); err != nil {
			return err
		}
	}
	return nil
}

var _ restore.Output = (*Output)(nil)

// New returns an Output writing through w.
func New(w *confinedfs.Writer) *Output { return &Output{w: w} }

// WithPackPrefetch makes the Output read whole packs of rep into kopia's data cache
// before the first small file stored in each is restored, when the file cannot be read
// past the cache (WithDirectReads reads whole packs its own way). Without it kopia reads every
// file's content from its pack separately and writes each into its data cache as a
// file of its own: for 200,000 files of 4 KiB that was half the system calls of the
// restore. cacheBytes is the size of the data cache; the prefetcher keeps at most half
// of it in packs it has asked for, so that the cache does not evict them before use.
func (o *Output) WithPackPrefetch(rep repo.DirectRepository, cacheBytes int64) *Output {
	packSize := int64(rep.ContentReader().ContentFormat().GetCachedMutableParameters().MaxPackSize)
	if packSize <= 0 || cacheBytes < 2*packSize {
		return o
	}
	o.packs = &packPrefetcher{rep: rep, window: int(cacheBytes / (2 * packSize))}
	return o
}

// WithDirectReads makes the Output read every file through d, past kopia's data
// cache; directories are still read through the cached repository.
func (o *Output) WithDirectReads(d *DirectReads) *Output {
	o.direct = d
	return o
}

// Parallelizable lets kopia restore files in parallel: the Writer is safe for
// concurrent use on different paths.
func (o *Output) Parallelizable() bool { return true }

// BeginDirectory makes the directory before its entries are written.
func (o *Output) BeginDirectory(_ context.Context, rel string, _ fs.Directory) error {
	rel = DecodePath(rel)
	if err := o.w.Mkdir(rel); err != nil {
		return err
	}
	return o.makeSpecial(rel)
}

// WriteDirEntry is not needed for a file system output.
func (o *Output) WriteDirEntry(context.Context, string, *snapshot.DirEntry, fs.Directory) error {
	return nil
}

// FinishDirectory applies the directory's metadata after its entries, so its
// modification time is not disturbed by them, then corrects the times of its
// subdirectories (see WithDirectoryTimes).
func (o *Output) FinishDirectory(ctx context.Context, rel string, e fs.Directory) error {
	rel = DecodePath(rel)
	if err := o.w.SetMetadata(rel, meta(e, false)); err != nil {
		return err
	}
	if rel == "" || rel == "." {
		// The root is finished last: every entry is written, its owner and mode
		// set (a file capability must come after the owner, which clears it), and
		// a directory's default ACL no longer applies to entries made in it.
		if err := o.applyAttributes(); err != nil {
			return err
		}
	}
	if o.rep == nil {
		return nil
	}
	return o.restoreSubdirectoryTimes(ctx, rel, e)
}

// WithDirectoryTimes makes the Output restore directories' own modification times,
// read from rep. kopia's snapshot file system reports a directory's time as the
// newest time of anything below it (DirSummary.MaxModTime), although the snapshot
// records the directory's own time in its parent's listing.
func (o *Output) WithDirectoryTimes(rep repo.Repository) *Output {
	o.rep = rep
	return o
}

// restoreSubdirectoryTimes sets the time of each subdirectory of e (restored and
// finished before e) from e's listing as stored.
func (o *Output) restoreSubdirectoryTimes(ctx context.Context, rel string, e fs.Directory) error {
	de, ok := e.(snapshot.HasDirEntry)
	if !ok {
		return nil
	}
	r, err := o.rep.OpenObject(ctx, de.DirEntry().ObjectID)
	if err != nil {
		return fmt.Errorf("reading the listing of %s: %w", rel, err)
	}
	defer r.Close()
	var dir snapshot.DirManifest
	if err := json.NewDecoder(r).Decode(&dir); err != nil {
		return fmt.Errorf("reading the listing of %s: %w", rel, err)
	}
	for _, child := range dir.Entries {
		if child.Type != snapshot.EntryTypeDirectory {
			continue
		}
		if err := o.w.SetModTime(path.Join(rel, DecodeName(child.Name)), child.ModTime.ToTime()); err != nil {
			return err
		}
	}
	return nil
}

// applyAttributes sets the extended attributes read from the attributes file.
func (o *Output) applyAttributes() error {
	o.mu.Lock()
	attrs := o.attributes
	o.attributes = nil
	o.mu.Unlock()
	for p, a := range attrs {
		refused, err := o.w.SetXattrs(p, a)
		if errors.Is(err, confinedfs.ErrAbsent) {
			// Deleted from the volume after its attributes were read, before
			// the upload reached it: the snapshot does not hold it.
			continue
		}
		if err != nil {
			return err
		}
		o.refused.Add(int64(refused))
	}
	return nil
}

// readAttributes reads the attributes file instead of writing it to the volume.
func (o *Output) readAttributes(ctx context.Context, f fs.File) error {
	r, err := f.Open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	attrs, err := ReadAttributes(r)
	if err != nil {
		return fmt.Errorf("reading the snapshot's extended attributes: %w", err)
	}
	o.mu.Lock()
	o.attributes = attrs
	o.mu.Unlock()
	o.holdfastFiles.Add(1)
	o.holdfastBytes.Add(f.Size())
	return nil
}

// WriteFile writes a file's content and metadata.
func (o *Output) WriteFile(ctx context.Context, rel string, f fs.File, progress restore.FileWriteProgress) error {
	switch rel {
	case AttributesName:
		return o.readAttributes(ctx, f)
	case SpecialName, LinksName, ReuseName: // read before the restore began, or not for it
		o.holdfastFiles.Add(1)
		o.holdfastBytes.Add(f.Size())
		return nil
	}
	name := DecodePath(rel)
	// Every file of a snapshot has its entry; one without is written on its own.
	if de, ok := f.(snapshot.HasDirEntry); ok {
		if g := o.links.group(name); g != nil {
			defer g.mu.Unlock()
			id := de.DirEntry().ObjectID
			if first, ok := g.written[id]; ok {
				// Another name of the file is written, with the same content:
				// this one becomes a link to it.
				return o.w.Link(name, first)
			}
			if err := o.writeFile(ctx, name, f, progress); err != nil {
				return err
			}
			g.written[id] = name
			return nil
		}
	}
	return o.writeFile(ctx, name, f, progress)
}

// writeFile writes the file f as name.
func (o *Output) writeFile(ctx context.Context, name string, f fs.File, progress restore.FileWriteProgress) error {
	r, err := o.open(ctx, f)
	if err != nil {
		return err
	}
	defer r.Close()
	var src io.Reader = r
	if progress != nil {
		src = &progressReader{r: r, report: progress}
	}
	_, err = o.w.WriteFileWithMetadata(name, src, meta(f, false))
	return err
}

// open opens a file past the cache (see WithDirectReads); when that cannot be done, a
// small file after prefetching its pack into the cache.
func (o *Output) open(ctx context.Context, f fs.File) (io.ReadCloser, error) {
	if de, ok := f.(snapshot.HasDirEntry); ok && o.direct != nil {
		if r, ok := o.direct.open(ctx, de.DirEntry().ObjectID); ok {
			return r, nil
		}
	}
	if f.Size() <= smallFileSize && o.packs != nil {
		o.packs.prefetch(ctx, f)
	}
	return f.Open(ctx)
}

// FileExists reports false so that every file is written.
func (o *Output) FileExists(context.Context, string, fs.File) bool { return false }

// CreateSymlink recreates a symlink with its target as stored.
func (o *Output) CreateSymlink(ctx context.Context, rel string, e fs.Symlink) error {
	target, err := e.Readlink(ctx)
	if err != nil {
		return err
	}
	rel = DecodePath(rel)
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

// smallFileSize is the largest file whose pack is prefetched into kopia's cache when
// files cannot be read past the cache (see WithDirectReads). Per-file costs dominate
// only for small files: on a tree of 1-512 KiB files (make bench, mixed set)
// prefetching for every file made the restore 25-90 % slower, as reading whole packs
// one at a time held up files whose contents were cheaper to read alone.
const smallFileSize = 16 << 10

// packPrefetcher brings the pack holding a file's content into kopia's data cache with
// one read, as restic restores from whole packs. It acts only for files stored as a
// single content: a large file's contents are each read in one piece anyway.
type packPrefetcher struct {
	rep    repo.DirectRepository
	window int

	mu     sync.Mutex
	recent []blob.ID // the last window packs asked for, oldest first

	// fetching lets one pack be read at a time: each read holds the pack twice in
	// memory (as read and as written to the cache), and the restore consumes packs
	// about in order, so parallel reads would cost memory and gain little.
	fetching sync.Mutex
}

func (p *packPrefetcher) prefetch(ctx context.Context, f fs.File) {
	de, ok := f.(snapshot.HasDirEntry)
	if !ok {
		return
	}
	cid, _, ok := de.DirEntry().ObjectID.ContentID()
	if !ok {
		return
	}
	info, err := p.rep.ContentInfo(ctx, cid)
	if err != nil {
		return // the read that follows reports it
	}
	p.mu.Lock()
	if slices.Contains(p.recent, info.PackBlobID) {
		p.mu.Unlock()
		return
	}
	if len(p.recent) == p.window {
		p.recent = p.recent[1:]
	}
	p.recent = append(p.recent, info.PackBlobID)
	p.mu.Unlock()
	// "blobs" asks for the whole pack. Readers of the same pack meanwhile wait for it
	// in kopia's cache; a failed prefetch only means that the read fetches the content
	// alone, as without prefetching.
	p.fetching.Lock()
	defer p.fetching.Unlock()
	p.rep.PrefetchContents(ctx, []content.ID{cid}, "blobs")
}
