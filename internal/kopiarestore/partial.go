package kopiarestore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kopia/kopia/fs"
)

// ErrPathNotInSnapshot fails a partial restore that asks for a path the snapshot does
// not hold: a restore that wrote nothing must not end Completed.
var ErrPathNotInSnapshot = errors.New("path is not in the snapshot")

// PathNotInSnapshotError names the path of a partial restore, or of a browse of a
// snapshot, that the snapshot lacks.
type PathNotInSnapshotError struct {
	Path     string
	Snapshot string
	// Browse marks a lookup that was never going to restore anything (a listing, a
	// download), whose message then says no more than that the path is missing.
	Browse bool
}

func (e *PathNotInSnapshotError) Error() string {
	if e.Browse {
		return fmt.Sprintf("path %q is not in snapshot %s", e.Path, e.Snapshot)
	}
	return fmt.Sprintf("path %q is not in snapshot %s, so nothing was restored", e.Path, e.Snapshot)
}

func (e *PathNotInSnapshotError) Unwrap() error { return ErrPathNotInSnapshot }

// Subtrees is root showing only paths (relative to it, "/"-separated, already
// validated) and the directories above them: restoring it restores each path, a
// directory with everything below it, at its own place and nothing else. Every path
// is looked up first; one the snapshot does not hold is a *PathNotInSnapshotError.
func Subtrees(ctx context.Context, root fs.Directory, snapshotID string, paths []string) (fs.Directory, error) {
	top := &partialDir{Directory: root, keep: map[string]*partialNode{}}
	for _, p := range paths {
		if err := top.add(ctx, p, snapshotID); err != nil {
			return nil, err
		}
	}
	return top, nil
}

// partialNode is one kept child of a partialDir: whole (every entry below it), or
// only some of its children.
type partialNode struct {
	whole bool
	dir   *partialDir
}

// partialDir is a directory of the snapshot that shows only the children in keep. It
// does not offer the snapshot's DirEntry, so the restore sets no subdirectory times
// from the full listing (those of directories that are not restored).
type partialDir struct {
	fs.Directory
	keep map[string]*partialNode // by stored (encoded) name
}

func (d *partialDir) add(ctx context.Context, p, snapshotID string) error {
	parts := strings.Split(p, "/")
	cur := d
	for i, part := range parts {
		name := EncodeName(part)
		e, err := cur.Directory.Child(ctx, name)
		if errors.Is(err, fs.ErrEntryNotFound) {
			return &PathNotInSnapshotError{Path: p, Snapshot: snapshotID}
		}
		if err != nil {
			return fmt.Errorf("looking up %q in snapshot %s: %w", p, snapshotID, err)
		}
		n := cur.keep[name]
		if i == len(parts)-1 {
			cur.keep[name] = &partialNode{whole: true}
			return nil
		}
		if n != nil && n.whole {
			return nil // a directory above is restored whole
		}
		sub, ok := e.(fs.Directory)
		if !ok {
			return &PathNotInSnapshotError{Path: p, Snapshot: snapshotID}
		}
		if n == nil {
			n = &partialNode{dir: &partialDir{Directory: sub, keep: map[string]*partialNode{}}}
			cur.keep[name] = n
		}
		cur = n.dir
	}
	return nil
}

// Child returns a kept child only.
func (d *partialDir) Child(ctx context.Context, name string) (fs.Entry, error) {
	n, ok := d.keep[name]
	if !ok {
		return nil, fs.ErrEntryNotFound
	}
	if !n.whole {
		return n.dir, nil
	}
	return d.Directory.Child(ctx, name)
}

// Iterate lists the kept children, in the snapshot's order.
func (d *partialDir) Iterate(ctx context.Context) (fs.DirectoryIterator, error) {
	var kept []fs.Entry
	err := fs.IterateEntries(ctx, d.Directory, func(_ context.Context, e fs.Entry) error {
		n, ok := d.keep[e.Name()]
		switch {
		case !ok:
		case n.whole:
			kept = append(kept, e)
		default:
			kept = append(kept, n.dir)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fs.StaticIterator(kept, nil), nil
}

// SupportsMultipleIterations is true: the kept children are listed again each time.
func (d *partialDir) SupportsMultipleIterations() bool { return true }

// Under says whether rel (relative to the volume, "/"-separated) is one of paths or
// below one; every path is under an empty list.
func Under(rel string, paths []string) bool {
	if len(paths) == 0 {
		return true
	}
	for _, p := range paths {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

// SpecialUnder keeps the special files of special that are under paths: those of the
// directories above a path, which a partial restore also enters, are not restored.
func SpecialUnder(special map[string][]Special, paths []string) map[string][]Special {
	if len(paths) == 0 || special == nil {
		return special
	}
	out := map[string][]Special{}
	for dir, list := range special {
		for _, s := range list {
			if Under(s.Path, paths) {
				out[dir] = append(out[dir], s)
			}
		}
	}
	return out
}
