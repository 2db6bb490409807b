package repository

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A restic browse reads the snapshot's trees with `restic cat tree <id>:<dir>`, which
// prints a directory's stored listing: names exactly as the volume had them (restic
// ls prints U+FFFD for each byte of a name that is not UTF-8), symlink targets, and
// no walk below the directory. Contents come from restic dump, whose tar stream is
// rewritten (see resticBrowse.tarDir). A snapshot's paths in restic are the absolute
// paths of the directory it was taken of (snapshot.Paths[0]).

// resticBrowse is one browse call's view of a restic snapshot.
type resticBrowse struct {
	r    *resticRepository
	snap *resticSnapshot
	// root is the directory the snapshot was taken of, as restic stores it.
	root string
}

// resticTreeNode is a node of a restic tree as restic stores it (restic's Node JSON).
type resticTreeNode struct {
	Name          string      `json:"name"`
	Type          string      `json:"type"`
	Mode          fs.FileMode `json:"mode"`
	ModTime       time.Time   `json:"mtime"`
	UID           uint32      `json:"uid"`
	GID           uint32      `json:"gid"`
	Size          int64       `json:"size"`
	LinkTarget    string      `json:"linktarget"`
	LinkTargetRaw []byte      `json:"linktarget_raw"`
}

// browse finds snapshot id for a browse: ErrSnapshotNotFound when the repository
// holds no Holdfast snapshot with that ID.
func (r *resticRepository) browse(ctx context.Context, id string) (*resticBrowse, error) {
	snap, err := r.find(ctx, id)
	if err != nil {
		return nil, err
	}
	if snap == nil || len(snap.Paths) != 1 {
		return nil, snapshotNotFound(id, r.URL(), nil)
	}
	return &resticBrowse{r: r, snap: snap, root: path.Clean(snap.Paths[0])}, nil
}

// abs is the path restic stores for rel ("" is the snapshot's root).
func (b *resticBrowse) abs(rel string) string {
	if rel == "" {
		return b.root
	}
	return path.Join(b.root, rel)
}

// catTree lists the directory at absolute path dir of the snapshot as stored.
func (b *resticBrowse) catTree(ctx context.Context, dir string) ([]resticTreeNode, error) {
	var out bytes.Buffer
	if err := b.r.run(ctx, &out, "cat", "--no-lock", "tree", b.snap.ID+":"+dir); err != nil {
		return nil, err
	}
	var tree struct {
		Nodes []resticTreeNode `json:"nodes"`
	}
	if err := json.Unmarshal(out.Bytes(), &tree); err != nil {
		return nil, fmt.Errorf("reading restic's tree of %q in snapshot %s: %w", dir, b.snap.ID, err)
	}
	for i := range tree.Nodes {
		n := &tree.Nodes[i]
		// restic stores a name strconv.Quote'd without its quotes, so that a name
		// that is not UTF-8 survives JSON; and such a symlink target as raw bytes.
		name, err := strconv.Unquote(`"` + n.Name + `"`)
		if err != nil {
			return nil, fmt.Errorf("reading restic's tree of %q in snapshot %s: name %q: %w", dir, b.snap.ID, n.Name, err)
		}
		n.Name = name
		if n.LinkTargetRaw != nil {
			n.LinkTarget = string(n.LinkTargetRaw)
		}
	}
	return tree.Nodes, nil
}

// dirNodes lists the directory at rel. restic says only in words why it cannot list
// a path, so when it fails the path is looked up from the root down, one listing at
// a time: a name missing from a listing, or not a directory there, is not in the
// snapshot; any other failure is restic's.
func (b *resticBrowse) dirNodes(ctx context.Context, rel string) ([]resticTreeNode, error) {
	nodes, err := b.catTree(ctx, b.abs(rel))
	if err == nil {
		return nodes, nil
	}
	var re *resticError
	if rel == "" || !errors.As(err, &re) {
		return nil, b.failed(ctx, err)
	}
	nodes, err = b.catTree(ctx, b.root)
	if err != nil {
		return nil, b.failed(ctx, err)
	}
	cur := ""
	for _, part := range strings.Split(rel, "/") {
		n := findNode(nodes, part)
		if n == nil || n.Type != "dir" {
			return nil, notInSnapshot(rel, b.snap.ID)
		}
		cur = path.Join(cur, part)
		if nodes, err = b.catTree(ctx, b.abs(cur)); err != nil {
			return nil, b.failed(ctx, err)
		}
	}
	return nodes, nil
}

func (b *resticBrowse) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return b.r.classify(err)
}

func findNode(nodes []resticTreeNode, name string) *resticTreeNode {
	for i := range nodes {
		if nodes[i].Name == name {
			return &nodes[i]
		}
	}
	return nil
}

// lookup is the node at rel ("" is the root), never following a symlink.
func (b *resticBrowse) lookup(ctx context.Context, rel string) (resticTreeNode, error) {
	if rel == "" {
		parent, base := path.Split(b.root)
		if base == "" { // a snapshot of "/": restic stores no node for it
			return resticTreeNode{Name: ".", Type: "dir", Mode: fs.ModeDir | 0o755}, nil
		}
		nodes, err := b.catTree(ctx, path.Clean(parent))
		if err != nil {
			return resticTreeNode{}, b.failed(ctx, err)
		}
		n := findNode(nodes, base)
		if n == nil || n.Type != "dir" {
			return resticTreeNode{}, newError(ErrDamaged, fmt.Sprintf("Snapshot %s of %s does not hold the directory %s it was taken of", b.snap.ID, b.r.URL(), b.root), nil)
		}
		return *n, nil
	}
	dir, name := path.Split(rel)
	nodes, err := b.dirNodes(ctx, strings.TrimSuffix(dir, "/"))
	if errors.Is(err, ErrPathNotInSnapshot) {
		return resticTreeNode{}, notInSnapshot(rel, b.snap.ID)
	}
	if err != nil {
		return resticTreeNode{}, err
	}
	n := findNode(nodes, name)
	if n == nil {
		return resticTreeNode{}, notInSnapshot(rel, b.snap.ID)
	}
	return *n, nil
}

// resticEntry describes node n, named name.
func resticEntry(name string, n resticTreeNode) Entry {
	e := Entry{Name: name, Mode: modeBits(n.Mode), ModTime: n.ModTime}
	switch n.Type {
	case "file":
		e.Type, e.Size = EntryFile, n.Size
	case "dir":
		e.Type, e.Size = EntryDir, -1
	case "symlink":
		e.Type, e.Target = EntrySymlink, n.LinkTarget
	default:
		e.Type = EntryOther
	}
	return e
}

func (r *resticRepository) Stat(ctx context.Context, snapshotID, p string) (Entry, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return Entry{}, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return Entry{}, err
	}
	n, err := b.lookup(ctx, p)
	if err != nil {
		return Entry{}, err
	}
	return resticEntry(browseName(p), n), nil
}

func (r *resticRepository) List(ctx context.Context, snapshotID, p string) ([]Entry, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return nil, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return nil, err
	}
	// One listing for a directory, the common case; anything else is looked up.
	nodes, err := b.catTree(ctx, b.abs(p))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var re *resticError
		if !errors.As(err, &re) {
			return nil, b.failed(ctx, err)
		}
		n, err := b.lookup(ctx, p)
		if err != nil {
			return nil, err
		}
		if n.Type == "dir" { // restic could not list it, yet it is there
			return nil, b.failed(ctx, re)
		}
		return []Entry{resticEntry(browseName(p), n)}, nil
	}
	out := make([]Entry, 0, len(nodes))
	for _, n := range nodes {
		if err := checkStoredName(n.Name, p, snapshotID); err != nil {
			return nil, err
		}
		out = append(out, resticEntry(n.Name, n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *resticRepository) Tar(ctx context.Context, snapshotID, p string, w io.Writer) (TarResult, error) {
	if err := ValidateBrowsePath(p); err != nil {
		return TarResult{}, err
	}
	b, err := r.browse(ctx, snapshotID)
	if err != nil {
		return TarResult{}, err
	}
	n, err := b.lookup(ctx, p)
	if err != nil {
		return TarResult{}, err
	}
	t := newBrowseTar(w)
	name := browseName(p)
	e := resticEntry(name, n)
	uid, gid := int(n.UID), int(n.GID)
	switch e.Type {
	case EntryDir:
		err = b.tarDir(ctx, t, name, p, e, uid, gid)
	case EntryFile:
		dir, base := path.Split(b.abs(p))
		err = b.r.dumpInto(ctx, func(rd io.Reader) error {
			return t.file(name, e, uid, gid, ctxReader{ctx, rd})
		}, "dump", "--quiet", b.snap.ID+":"+path.Clean(dir), "/"+base)
	case EntrySymlink:
		err = t.symlink(name, e, uid, gid)
	default:
		t.res.Skipped++ // a FIFO or device node named on its own
	}
	if err != nil {
		if ctx.Err() != nil {
			return t.res, ctx.Err()
		}
		return t.res, err
	}
	if err := t.close(); err != nil {
		return t.res, err
	}
	return t.res, nil
}

// tarDir writes directory rel as name, with everything below it, from restic dump's
// tar stream of it. That stream names entries relative to the directory and has no
// entry for the directory itself; it writes the directory's own FIFOs and device
// nodes as empty regular files and leaves out those deeper down. So the directory's
// listing says which of its names to leave out, and restic ls counts the rest.
func (b *resticBrowse) tarDir(ctx context.Context, t *browseTar, name, rel string, e Entry, uid, gid int) error {
	nodes, err := b.dirNodes(ctx, rel)
	if err != nil {
		return err
	}
	special := map[string]bool{}
	for _, n := range nodes {
		if err := checkStoredName(n.Name, rel, b.snap.ID); err != nil {
			return err
		}
		if resticEntry(n.Name, n).Type == EntryOther {
			special[n.Name] = true
		}
	}
	skipped, err := b.countSpecial(ctx, rel)
	if err != nil {
		return err
	}
	if err := t.dir(name, e, uid, gid); err != nil {
		return err
	}
	if err := b.r.dumpInto(ctx, func(rd io.Reader) error {
		return b.rewrite(ctx, t, name, rel, special, tar.NewReader(ctxReader{ctx, rd}))
	}, "dump", "--quiet", "--archive", "tar", b.snap.ID+":"+b.abs(rel), "/"); err != nil {
		return err
	}
	t.res.Skipped += skipped
	return nil
}

// rewrite copies restic dump's tar stream of directory rel into t, below name.
func (b *resticBrowse) rewrite(ctx context.Context, t *browseTar, name, rel string, special map[string]bool, tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading restic dump's stream of %q in snapshot %s: %w", rel, b.snap.ID, err)
		}
		sub := strings.TrimSuffix(h.Name, "/")
		if special[sub] {
			continue
		}
		for _, part := range strings.Split(sub, "/") {
			if err := checkStoredName(part, rel, b.snap.ID); err != nil {
				return err
			}
		}
		fi := h.FileInfo()
		e := Entry{Mode: modeBits(fi.Mode()), ModTime: h.ModTime, Size: h.Size, Target: h.Linkname}
		full := name + "/" + sub
		switch h.Typeflag {
		case tar.TypeDir:
			err = t.dir(full, e, h.Uid, h.Gid)
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // restic writes TypeRegA for some entries
			err = t.file(full, e, h.Uid, h.Gid, tr)
		case tar.TypeSymlink:
			err = t.symlink(full, e, h.Uid, h.Gid)
		default:
			t.res.Skipped++
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// countSpecial counts the FIFOs, device nodes and sockets at or below rel, with one
// walk of restic ls (its garbled names do not matter for counting).
func (b *resticBrowse) countSpecial(ctx context.Context, rel string) (int64, error) {
	pr, pw := io.Pipe()
	var n int64
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var node resticNode
			if json.Unmarshal(sc.Bytes(), &node) != nil || node.StructType != "node" {
				continue
			}
			switch node.Type {
			case "file", "dir", "symlink":
			default:
				n++
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := b.r.run(ctx, pw, "ls", "--json", "--no-lock", "--recursive", b.snap.ID, b.abs(rel))
	_ = pw.Close()
	<-parsed
	if err != nil {
		return 0, b.failed(ctx, err)
	}
	return n, nil
}
