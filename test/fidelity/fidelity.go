// Package fidelity proves that a restore gives back every file as it was: Generate
// builds a tree with every awkward case a volume can hold, Scan records a Manifest of
// what a tree holds (type, mode, owner, size, times, content hash, extended attributes,
// link targets, hard-link groups, sparseness), and Compare lists what differs.
package fidelity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is what a manifest records of one entry of a tree.
type Entry struct {
	Type    string // file, dir, symlink, fifo, socket, chardev, blockdev
	Mode    fs.FileMode
	UID     int
	GID     int
	Size    int64 // regular files only
	ModTime time.Time
	SHA256  string            // regular files only
	Target  string            // symlinks only
	Rdev    uint64            // device nodes only
	Xattrs  map[string]string // name: value as hex
	// Sparse is set for a regular file with fewer bytes allocated than its size.
	Sparse bool
	// LinkGroup is, for an entry with more than one name in the tree, the first of its
	// names in sorted order; empty otherwise.
	LinkGroup string
}

// Manifest maps every entry's path relative to the tree root ("." is the root, names
// are the raw bytes as a Go string) to what it holds.
type Manifest map[string]Entry

// Scan records the tree at root.
func Scan(root string) (Manifest, error) {
	m := Manifest{}
	type inode struct{ dev, ino uint64 }
	names := map[inode][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := Entry{Mode: mode(st.Mode), UID: int(st.Uid), GID: int(st.Gid), ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UTC()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type, e.Size = "file", st.Size
			if e.SHA256, err = hashFile(p); err != nil {
				return err
			}
			e.Sparse = st.Size > 0 && st.Blocks*512 < st.Size
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFLNK:
			e.Type = "symlink"
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			e.Type = "fifo"
		case unix.S_IFSOCK:
			e.Type = "socket"
		case unix.S_IFCHR:
			e.Type, e.Rdev = "chardev", st.Rdev
		case unix.S_IFBLK:
			e.Type, e.Rdev = "blockdev", st.Rdev
		}
		if e.Xattrs, err = xattrs(p); err != nil {
			return err
		}
		if st.Nlink > 1 && e.Type != "dir" {
			k := inode{st.Dev, st.Ino}
			names[k] = append(names[k], rel)
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, group := range names {
		if len(group) < 2 {
			continue
		}
		sort.Strings(group)
		for _, n := range group {
			e := m[n]
			e.LinkGroup = group[0]
			m[n] = e
		}
	}
	return m, nil
}

func mode(m uint32) fs.FileMode {
	r := fs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		r |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		r |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		r |= fs.ModeSticky
	}
	return r
}

func hashFile(p string) (string, error) {
	// O_NONBLOCK: never wait on a FIFO swapped in; a regular file ignores it.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// xattrs are the extended attributes of p itself (not of a symlink's target), values
// in hex; nil when there are none.
func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the extended attributes of %s: %w", p, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "security.selinux") {
			continue // SELinux labels are the target's policy's business
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("reading the extended attribute %s of %s: %w", name, p, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = hex.EncodeToString(val[:vn])
	}
	return out, nil
}

// Difference is one way a restored tree differs from its source.
type Difference struct {
	Path string
	// Field is missing, extra, type, mode, owner, size, mtime, mtime-subsecond (only
	// the fraction of a second was lost), content, target, rdev, xattrs, sparse or
	// hardlink.
	Field string
	Want  string
	Got   string
}

func (d Difference) String() string {
	return fmt.Sprintf("%q %s: want %s, got %s", d.Path, d.Field, d.Want, d.Got)
}

// Compare lists how got differs from want, sorted by path and field. The modification
// times of directories are compared too; those of symlinks are.
func Compare(want, got Manifest) []Difference {
	var diffs []Difference
	add := func(path, field string, w, g any) {
		diffs = append(diffs, Difference{Path: path, Field: field, Want: fmt.Sprint(w), Got: fmt.Sprint(g)})
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			add(p, "missing", w.Type, "nothing")
			continue
		}
		if w.Type != g.Type {
			add(p, "type", w.Type, g.Type)
			continue
		}
		if w.Mode != g.Mode && w.Type != "symlink" { // a symlink's mode is always 0777 on Linux
			add(p, "mode", w.Mode, g.Mode)
		}
		if w.UID != g.UID || w.GID != g.GID {
			add(p, "owner", fmt.Sprintf("%d:%d", w.UID, w.GID), fmt.Sprintf("%d:%d", g.UID, g.GID))
		}
		if w.Size != g.Size {
			add(p, "size", w.Size, g.Size)
		}
		switch {
		case w.ModTime.Equal(g.ModTime):
		case w.ModTime.Truncate(time.Second).Equal(g.ModTime):
			add(p, "mtime-subsecond", w.ModTime.Format(time.RFC3339Nano), g.ModTime.Format(time.RFC3339Nano))
		default:
			add(p, "mtime", w.ModTime.Format(time.RFC3339Nano), g.ModTime.Format(time.RFC3339Nano))
		}
		if w.SHA256 != g.SHA256 {
			add(p, "content", w.SHA256, g.SHA256)
		}
		if w.Target != g.Target {
			add(p, "target", w.Target, g.Target)
		}
		if w.Rdev != g.Rdev {
			add(p, "rdev", w.Rdev, g.Rdev)
		}
		if !sameXattrs(w.Xattrs, g.Xattrs) {
			add(p, "xattrs", keys(w.Xattrs), keys(g.Xattrs))
		}
		if w.Sparse != g.Sparse {
			add(p, "sparse", w.Sparse, g.Sparse)
		}
		if w.LinkGroup != g.LinkGroup {
			add(p, "hardlink", w.LinkGroup, g.LinkGroup)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			add(p, "extra", "nothing", g.Type)
		}
	}
	sort.Slice(diffs, func(i, j int) bool {
		if diffs[i].Path != diffs[j].Path {
			return diffs[i].Path < diffs[j].Path
		}
		return diffs[i].Field < diffs[j].Field
	})
	return diffs
}

func sameXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return "[" + strings.Join(ks, " ") + "]"
}

// Known is a difference a restore path is known to make, and why: Path and Field must
// match exactly.
type Known struct {
	Path, Field string
	Why         string
}

// Check sorts diffs against known: it returns the differences that are not known, and
// the known ones that did not occur although their path is in the source (a fix that
// landed: the list must shrink with it).
func Check(diffs []Difference, known []Known, source Manifest) (unknown []Difference, stale []Known) {
	seen := map[[2]string]bool{}
	isKnown := map[[2]string]bool{}
	for _, k := range known {
		isKnown[[2]string{k.Path, k.Field}] = true
	}
	for _, d := range diffs {
		k := [2]string{d.Path, d.Field}
		seen[k] = true
		if !isKnown[k] {
			unknown = append(unknown, d)
		}
	}
	for _, k := range known {
		_, inSource := source[k.Path]
		if (inSource || k.Field == "extra") && !seen[[2]string{k.Path, k.Field}] {
			stale = append(stale, k)
		}
	}
	return unknown, stale
}
