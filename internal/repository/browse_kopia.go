package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"

	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// kopiaBrowse is one browse call's view of a kopia snapshot. It reads the snapshot's
// directory listings itself rather than through kopia's snapshot file system, which
// reports a directory's time as the newest time below it.
type kopiaBrowse struct {
	r    *kopiaRepository
	id   string
	root *snapshot.DirEntry
	// special are the snapshot's FIFOs and device nodes by directory ("." for the
	// root), read from Holdfast's list at the root once asked for.
	special map[string][]kopiarestore.Special
	read    bool
}

// kopiaEntry is an entry of a kopia snapshot: a stored one (de), or a special file
// from Holdfast's list (sp).
type kopiaEntry struct {
	de *snapshot.DirEntry
	sp *kopiarestore.Special
}

// browse opens snapshot id for a browse: ErrSnapshotNotFound when the repository
// holds no complete snapshot of the namespace with that ID.
func (r *kopiaRepository) browse(ctx context.Context, id string) (*kopiaBrowse, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	var man snapshot.Manifest
	md, err := r.rep.GetManifest(ctx, manifest.ID(id), &man)
	switch {
	case errors.Is(err, manifest.ErrNotFound):
		return nil, snapshotNotFound(id, r.URL(), err)
	case err != nil:
		return nil, classify(fmt.Errorf("reading snapshot %s: %w", id, err), r.cfg.Store)
	case md.Labels[manifest.TypeLabelKey] != snapshot.ManifestType, man.Source.UserName != r.cfg.Namespace,
		man.IncompleteReason != "", man.RootEntry == nil:
		// Another kind of manifest, another namespace's snapshot, or one Snapshots
		// does not list.
		return nil, snapshotNotFound(id, r.URL(), nil)
	}
	return &kopiaBrowse{r: r, id: id, root: man.RootEntry}, nil
}

// readDir reads the listing of directory de (at rel: "" is the root), without
// Holdfast's own files at the root.
func (b *kopiaBrowse) readDir(ctx context.Context, rel string, de *snapshot.DirEntry) ([]*snapshot.DirEntry, error) {
	rd, err := b.r.rep.OpenObject(ctx, de.ObjectID)
	if err != nil {
		return nil, classify(fmt.Errorf("reading directory %q of snapshot %s: %w", rel, b.id, err), b.r.cfg.Store)
	}
	defer rd.Close()
	var dir snapshot.DirManifest
	if err := json.NewDecoder(rd).Decode(&dir); err != nil {
		return nil, classify(fmt.Errorf("reading directory %q of snapshot %s: %w", rel, b.id, err), b.r.cfg.Store)
	}
	out := dir.Entries[:0]
	for _, e := range dir.Entries {
		if rel == "" && isHoldfastFile(e.Name) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// isHoldfastFile says whether name is one of Holdfast's own files at a snapshot's
// root; no name of a volume is stored as one of these (see kopiarestore.EncodeName).
func isHoldfastFile(name string) bool {
	switch name {
	case kopiarestore.AttributesName, kopiarestore.SpecialName, kopiarestore.LinksName, kopiarestore.ReuseName:
		return true
	}
	return false
}

// specials reads Holdfast's list of the snapshot's special files, once.
func (b *kopiaBrowse) specials(ctx context.Context) (map[string][]kopiarestore.Special, error) {
	if b.read {
		return b.special, nil
	}
	rd, err := b.r.rep.OpenObject(ctx, b.root.ObjectID)
	if err != nil {
		return nil, classify(fmt.Errorf("reading the root of snapshot %s: %w", b.id, err), b.r.cfg.Store)
	}
	var dir snapshot.DirManifest
	err = json.NewDecoder(rd).Decode(&dir)
	rd.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the root of snapshot %s: %w", b.id, err)
	}
	for _, e := range dir.Entries {
		if e.Name != kopiarestore.SpecialName || e.Type != snapshot.EntryTypeFile {
			continue
		}
		f, err := b.r.rep.OpenObject(ctx, e.ObjectID)
		if err != nil {
			return nil, classify(fmt.Errorf("reading the special files of snapshot %s: %w", b.id, err), b.r.cfg.Store)
		}
		b.special, err = kopiarestore.ReadSpecial(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the special files of snapshot %s: %w", b.id, err)
		}
	}
	b.read = true
	return b.special, nil
}

// lookup finds the entry at p (validated; "" is the root), never following a symlink.
func (b *kopiaBrowse) lookup(ctx context.Context, p string) (kopiaEntry, error) {
	cur, rel := b.root, ""
	if p == "" {
		return kopiaEntry{de: cur}, nil
	}
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if cur.Type != snapshot.EntryTypeDirectory {
			return kopiaEntry{}, notInSnapshot(p, b.id)
		}
		entries, err := b.readDir(ctx, rel, cur)
		if err != nil {
			return kopiaEntry{}, err
		}
		stored := kopiarestore.EncodeName(part)
		var next *snapshot.DirEntry
		for _, e := range entries {
			if e.Name == stored {
				next = e
				break
			}
		}
		if next == nil {
			if i == len(parts)-1 {
				// kopia stores no FIFOs or device nodes: Holdfast's list has them.
				special, err := b.specials(ctx)
				if err != nil {
					return kopiaEntry{}, err
				}
				for j, s := range special[specialDir(rel)] {
					if s.Path == p {
						return kopiaEntry{sp: &special[specialDir(rel)][j]}, nil
					}
				}
			}
			return kopiaEntry{}, notInSnapshot(p, b.id)
		}
		cur, rel = next, path.Join(rel, part)
	}
	return kopiaEntry{de: cur}, nil
}

// specialDir is the key of directory rel in Holdfast's list of special files.
func specialDir(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// entry describes e, named name.
func (b *kopiaBrowse) entry(ctx context.Context, name string, e kopiaEntry) (Entry, error) {
	if e.sp != nil {
		return Entry{Name: name, Type: EntryOther, Mode: modeBits(e.sp.Mode), ModTime: e.sp.ModTime}, nil
	}
	de := e.de
	out := Entry{Name: name, Mode: modeBits(os.FileMode(de.Permissions)), ModTime: de.ModTime.ToTime()}
	switch de.Type {
	case snapshot.EntryTypeFile:
		out.Type, out.Size = EntryFile, de.FileSize
	case snapshot.EntryTypeDirectory:
		out.Type, out.Size = EntryDir, -1
		if de.DirSummary != nil {
			out.Size = de.DirSummary.TotalFileSize
		}
	case snapshot.EntryTypeSymlink:
		out.Type = EntrySymlink
		target, err := b.readlink(ctx, de)
		if err != nil {
			return Entry{}, err
		}
		out.Target = target
	default:
		out.Type = EntryOther
	}
	return out, nil
}

// maxLinkTarget bounds the symlink target read: Linux allows 4095 bytes.
const maxLinkTarget = 64 << 10

func (b *kopiaBrowse) readlink(ctx context.Context, de *snapshot.DirEntry) (string, error) {
	rd, err := b.r.rep.OpenObject(ctx, de.ObjectID)
	if err != nil {
		return "", classify(fmt.Errorf("reading a symlink of snapshot %s: %w", b.id, err), b.r.cfg.Store)
	}
	defer rd.Close()
	target, err := io.ReadAll(io.LimitReader(rd, maxLinkTarget))
	if err != nil {
		return "", classify(fmt.Errorf("reading a symlink of snapshot %s: %w", b.id, err), b.r.cfg.Store)
	}
	return string(target), nil
}

// rootSize is the size of the files of the snapshot's root directory: its summary
// counts Holdfast's own files, which are not the volume's.
func (b *kopiaBrowse) rootSize(ctx context.Context) (int64, error) {
	if b.root.DirSummary == nil {
		return -1, nil
	}
	size := b.root.DirSummary.TotalFileSize
	rd, err := b.r.rep.OpenObject(ctx, b.root.ObjectID)
	if err != nil {
		return 0, classify(fmt.Errorf("reading the root of snapshot %s: %w", b.id, err), b.r.cfg.Store)
	}
	defer rd.Close()
	var dir snapshot.DirManifest
	if err := json.NewDecoder(rd).Decode(&dir); err != nil {
		return 0, fmt.Errorf("reading the root of snapshot %s: %w", b.id, err)
	}
	for _, e := range dir.Entries {
		if isHoldfastFile(e.Name) {
			size -= e.FileSize
		}
	}
	return size, nil
}

func (r *kopiaRepository) Stat(ctx context.Context, snapshotID, p string) (Entry, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return Entry{}, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return Entry{}, err
	}
	e, err := b.lookup(ctx, p)
	if err != nil {
		return Entry{}, err
	}
	out, err := b.entry(ctx, browseName(p), e)
	if err != nil {
		return Entry{}, err
	}
	if p == "" {
		if out.Size, err = b.rootSize(ctx); err != nil {
			return Entry{}, err
		}
	}
	return out, nil
}

func (r *kopiaRepository) List(ctx context.Context, snapshotID, p string) ([]Entry, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return nil, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return nil, err
	}
	e, err := b.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if e.de == nil || e.de.Type != snapshot.EntryTypeDirectory {
		one, err := b.entry(ctx, browseName(p), e)
		if err != nil {
			return nil, err
		}
		return []Entry{one}, nil
	}
	children, err := b.readDir(ctx, p, e.de)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(children))
	for _, c := range children {
		name := kopiarestore.DecodeName(c.Name)
		if err := checkStoredName(name, p, snapshotID); err != nil {
			return nil, err
		}
		entry, err := b.entry(ctx, name, kopiaEntry{de: c})
		if err != nil {
			return nil, err
		}
		out = append(out, entry)
	}
	special, err := b.specials(ctx)
	if err != nil {
		return nil, err
	}
	for i, s := range special[specialDir(p)] {
		entry, _ := b.entry(ctx, path.Base(s.Path), kopiaEntry{sp: &special[specialDir(p)][i]})
		out = append(out, entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *kopiaRepository) Tar(ctx context.Context, snapshotID, p string, w io.Writer) (TarResult, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return TarResult{}, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return TarResult{}, err
	}
	e, err := b.lookup(ctx, p)
	if err != nil {
		return TarResult{}, err
	}
	t := newBrowseTar(w)
	if e.de == nil {
		t.res.Skipped++ // a FIFO or device node named on its own
	} else {
		if e.de.Type == snapshot.EntryTypeDirectory {
			special, err := b.specials(ctx)
			if err != nil {
				return TarResult{}, err
			}
			for _, list := range special {
				for _, s := range list {
					if p == "" || kopiarestore.Under(s.Path, []string{p}) {
						t.res.Skipped++
					}
				}
			}
		}
		if err := b.tar(ctx, t, browseName(p), p, e.de); err != nil {
			if ctx.Err() != nil {
				return t.res, ctx.Err()
			}
			return t.res, err
		}
	}
	if err := t.close(); err != nil {
		return t.res, err
	}
	return t.res, nil
}

// tar writes de, at rel in the snapshot, as name, and everything below it.
func (b *kopiaBrowse) tar(ctx context.Context, t *browseTar, name, rel string, de *snapshot.DirEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entry, err := b.entry(ctx, path.Base(name), kopiaEntry{de: de})
	if err != nil {
		return err
	}
	uid, gid := int(de.UserID), int(de.GroupID)
	switch entry.Type {
	case EntryDir:
		if err := t.dir(name, entry, uid, gid); err != nil {
			return err
		}
		children, err := b.readDir(ctx, rel, de)
		if err != nil {
			return err
		}
		type child struct {
			name string
			de   *snapshot.DirEntry
		}
		named := make([]child, 0, len(children))
		for _, c := range children {
			n := kopiarestore.DecodeName(c.Name)
			if err := checkStoredName(n, rel, b.id); err != nil {
				return err
			}
			named = append(named, child{n, c})
		}
		sort.Slice(named, func(i, j int) bool { return named[i].name < named[j].name })
		for _, c := range named {
			if err := b.tar(ctx, t, name+"/"+c.name, path.Join(rel, c.name), c.de); err != nil {
				return err
			}
		}
		return nil
	case EntryFile:
		rd, err := b.r.rep.OpenObject(ctx, de.ObjectID)
		if err != nil {
			return classify(fmt.Errorf("reading %q of snapshot %s: %w", rel, b.id, err), b.r.cfg.Store)
		}
		defer rd.Close()
		return t.file(name, entry, uid, gid, ctxReader{ctx, rd})
	case EntrySymlink:
		return t.symlink(name, entry, uid, gid)
	}
	t.res.Skipped++
	return nil
}
