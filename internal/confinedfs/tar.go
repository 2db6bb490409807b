package confinedfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// TarStats counts what ExtractTar restored and what it had to leave out.
type TarStats struct {
	Dirs, Files, Symlinks, HardLinks int64
	// FIFOs and Devices are the named pipes and device nodes recreated.
	FIFOs, Devices int64
	// DevicesSkipped are device nodes not recreated: the writer may not make them
	// (no CAP_MKNOD, or the device cgroup refuses) or the stream lacks their number.
	DevicesSkipped int64
	// Skipped counts entries of other kinds (sockets), which a restore does not
	// recreate.
	Skipped int64
	// AttributesRefused counts extended attributes the target's file system or the
	// writer's privileges refused (a file system mounted without user_xattr, a
	// trusted.* attribute without CAP_SYS_ADMIN).
	AttributesRefused int64
}

// TarOptions says what the stream itself cannot.
type TarOptions struct {
	// Special names, by entry path as Clean returns it, the FIFOs (Mode has
	// fs.ModeNamedPipe) and device nodes (fs.ModeDevice, with fs.ModeCharDevice) of
	// the tree, which the stream writes as empty regular files or leaves out: restic
	// dump does both (it leaves them out below the directories it dumps). A FIFO
	// the stream left out is made with this metadata before the directories' times
	// are set. A device named here has no number, so it is counted as skipped.
	Special map[string]Meta
	// HardLinks, if set, names the regular entries that are further names of one file
	// (a stream that writes each name as a copy, as restic dump does): each is made
	// a hard link to the first name written instead.
	HardLinks *HardLinks
	// Root, if set, is the name of the entry that is the target directory itself:
	// every other entry is below it (Root + "/..."), and an entry that is not fails
	// the extraction with ErrEscape. restic dump gives the root directory's metadata
	// only when the directory above it is dumped.
	Root string
	// ModTimes, if set, holds modification times to the nanosecond (Unix ns) by
	// PathHash of the entry path, for a stream that carries whole seconds (restic
	// dump). A time is used only within a second of the stream's own.
	ModTimes map[uint64]int64
}

// HardLinks groups the names of files with more than one, by inode, compactly: a
// restore of millions of files keeps one small map entry per file. Add the regular
// files of the tree in the order of the stream.
type HardLinks struct {
	first   map[uint64]uint64 // inode: PathHash of its first name
	targets map[uint64]uint64 // PathHash of a first name with further names: inode
	later   map[string]uint64 // a further name: inode
	written map[uint64]string // inode: the entry name its first name was written as
}

// Add records that the regular file at rel (as Clean gives it) is inode ino.
func (h *HardLinks) Add(rel string, ino uint64) {
	if h.first == nil {
		h.first, h.targets, h.later, h.written = map[uint64]uint64{}, map[uint64]uint64{}, map[string]uint64{}, map[uint64]string{}
	}
	if first, ok := h.first[ino]; ok {
		h.targets[first] = ino
		h.later[rel] = ino
		return
	}
	h.first[ino] = PathHash(rel)
}

// Groups is the number of files that have more than one name.
func (h *HardLinks) Groups() int { return len(h.targets) }

// PathHash is the FNV-1a hash of rel.
func PathHash(rel string) uint64 {
	hash := uint64(14695981039346656037)
	for i := 0; i < len(rel); i++ {
		hash ^= uint64(rel[i])
		hash *= 1099511628211
	}
	return hash
}

// linkTo returns the entry name to hard-link rel to, if rel is a further name of a
// file already written.
func (h *HardLinks) linkTo(rel string) (string, bool) {
	if h == nil || h.later == nil {
		return "", false
	}
	ino, ok := h.later[rel]
	if !ok {
		return "", false
	}
	first, ok := h.written[ino]
	return first, ok
}

// wrote records that rel was written as entry name, if it is the first name of a
// file with more.
func (h *HardLinks) wrote(rel, name string) {
	if h == nil || h.targets == nil {
		return
	}
	if ino, ok := h.targets[PathHash(rel)]; ok {
		if _, later := h.later[rel]; !later {
			h.written[ino] = name
		}
	}
}

// xattrPrefix marks an extended attribute among a tar entry's PAX records, as GNU
// tar, bsdtar and restic dump write them.
const xattrPrefix = "SCHILY.xattr."

// ExtractTar restores a tar stream (restic dump, kopia's tar output) into the writer's
// directory: every entry goes through the Writer, so none can land outside it.
// Directory metadata is applied after their contents, so their times stick, and so
// is a directory's default ACL, so that it is not inherited by entries that did not
// have it. Extended attributes come from the entries' SCHILY.xattr PAX records.
func ExtractTar(ctx context.Context, w *Writer, r io.Reader, opts TarOptions) (TarStats, error) {
	var stats TarStats
	type dirMeta struct {
		name   string
		meta   Meta
		xattrs map[string]string
	}
	var dirs []dirMeta
	setXattrs := func(name string, attrs map[string]string) error {
		refused, err := w.SetXattrs(name, attrs)
		stats.AttributesRefused += int64(refused)
		return err
	}
	seen := map[string]bool{} // the entries of opts.Special in the stream
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return stats, fmt.Errorf("reading the snapshot stream: %w", err)
		}
		if opts.Root != "" {
			if hdr.Name, err = underRoot(hdr.Name, opts.Root); err != nil {
				return stats, err
			}
			if hdr.Typeflag == tar.TypeLink {
				if hdr.Linkname, err = underRoot(hdr.Linkname, opts.Root); err != nil {
					return stats, err
				}
			}
		}
		meta := Meta{Mode: fs.FileMode(hdr.Mode).Perm() | specialBits(hdr.Mode), UID: hdr.Uid, GID: hdr.Gid, ModTime: preciseTime(hdr, opts.ModTimes)}
		xattrs, bad := paxXattrs(hdr.PAXRecords)
		stats.AttributesRefused += int64(bad)
		typ := hdr.Typeflag
		if typ == tar.TypeReg || typ == tar.TypeRegA {
			if special, ok := specialEntry(hdr, opts); ok {
				rel, _ := Clean(hdr.Name)
				seen[rel] = true
				switch {
				case special&fs.ModeNamedPipe != 0:
					typ = tar.TypeFifo
				case special&fs.ModeDevice != 0:
					stats.DevicesSkipped++
					continue
				default:
					stats.Skipped++
					continue
				}
			}
		}
		switch typ {
		case tar.TypeDir:
			if err := w.Mkdir(hdr.Name); err != nil {
				return stats, err
			}
			dirs = append(dirs, dirMeta{hdr.Name, meta, xattrs})
			stats.Dirs++
			continue
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			rel, _ := Clean(hdr.Name)
			if first, ok := opts.HardLinks.linkTo(rel); ok {
				if err := w.Link(hdr.Name, first); err != nil {
					return stats, err
				}
				stats.HardLinks++
				continue
			}
			// The reader expands a sparse entry (GNU or PAX) to its full content, and
			// the Writer writes runs of zeros as holes again.
			if _, err := w.WriteFileWithMetadata(hdr.Name, tr, meta); err != nil {
				return stats, err
			}
			opts.HardLinks.wrote(rel, hdr.Name)
			if err := setXattrs(hdr.Name, xattrs); err != nil {
				return stats, err
			}
			stats.Files++
			continue
		case tar.TypeSymlink:
			if err := w.Symlink(hdr.Name, hdr.Linkname); err != nil {
				return stats, err
			}
			meta.Symlink = true
			stats.Symlinks++
		case tar.TypeLink:
			if err := w.Link(hdr.Name, hdr.Linkname); err != nil {
				return stats, err
			}
			stats.HardLinks++
			continue // the link shares the metadata of its target
		case tar.TypeFifo:
			if err := w.Mknod(hdr.Name, fs.ModeNamedPipe|meta.Mode, 0); err != nil {
				return stats, fmt.Errorf("making the FIFO %s: %w", hdr.Name, err)
			}
			stats.FIFOs++
		case tar.TypeChar, tar.TypeBlock:
			mode := fs.ModeDevice | meta.Mode
			if typ == tar.TypeChar {
				mode |= fs.ModeCharDevice
			}
			if err := w.Mknod(hdr.Name, mode, Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))); err != nil {
				if errors.Is(err, fs.ErrPermission) {
					stats.DevicesSkipped++
					continue
				}
				return stats, fmt.Errorf("making the device node %s: %w", hdr.Name, err)
			}
			stats.Devices++
		default:
			stats.Skipped++
			continue
		}
		if err := w.SetMetadata(hdr.Name, meta); err != nil {
			return stats, err
		}
		if !meta.Symlink {
			if err := setXattrs(hdr.Name, xattrs); err != nil {
				return stats, err
			}
		}
	}
	for rel, m := range opts.Special {
		if seen[rel] {
			continue
		}
		switch {
		case m.Mode&fs.ModeNamedPipe != 0:
			if err := w.Mknod(rel, m.Mode, 0); err != nil {
				return stats, fmt.Errorf("making the FIFO %s: %w", rel, err)
			}
			if err := w.SetMetadata(rel, m); err != nil {
				return stats, err
			}
			stats.FIFOs++
		case m.Mode&fs.ModeDevice != 0:
			stats.DevicesSkipped++
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := w.SetMetadata(dirs[i].name, dirs[i].meta); err != nil {
			return stats, err
		}
		if err := setXattrs(dirs[i].name, dirs[i].xattrs); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// underRoot is name relative to root, "." for root itself.
func underRoot(name, root string) (string, error) {
	n := strings.TrimPrefix(strings.TrimSuffix(name, "/"), "./")
	if n == root {
		return ".", nil
	}
	if rest, ok := strings.CutPrefix(n, root+"/"); ok && rest != "" {
		return rest, nil
	}
	return "", fmt.Errorf("%w: snapshot entry %q is not below %q; refusing it", ErrEscape, name, root)
}

// preciseTime is hdr's modification time, to the nanosecond when times has it.
func preciseTime(hdr *tar.Header, times map[uint64]int64) time.Time {
	if len(times) == 0 {
		return hdr.ModTime
	}
	rel, err := Clean(hdr.Name)
	if err != nil {
		return hdr.ModTime
	}
	ns, ok := times[PathHash(rel)]
	if !ok {
		return hdr.ModTime
	}
	t := time.Unix(0, ns)
	if d := t.Sub(hdr.ModTime); d <= -time.Second || d >= time.Second {
		return hdr.ModTime // another entry's time (a hash collision) or a changed tree
	}
	return t
}

// specialEntry reports the kind opts.Special gives an empty regular entry.
func specialEntry(hdr *tar.Header, opts TarOptions) (fs.FileMode, bool) {
	if hdr.Size != 0 || len(opts.Special) == 0 {
		return 0, false
	}
	rel, err := Clean(hdr.Name)
	if err != nil {
		return 0, false
	}
	m, ok := opts.Special[rel]
	return m.Mode, ok
}

// selinuxLabel is left to the target's policy: a label from another cluster or node
// could deny the pod its own files.
const selinuxLabel = "security.selinux"

// paxXattrs are the extended attributes among records, POSIX ACLs included and the
// SELinux label excepted; nil when there are none. bad counts ACLs that could not be
// read.
func paxXattrs(records map[string]string) (attrs map[string]string, bad int) {
	set := func(name, value string) {
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs[name] = value
	}
	for k, v := range records {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok {
			if name != selinuxLabel {
				set(name, v)
			}
			continue
		}
		var name string
		switch k {
		case paxACLAccess:
			name = "system.posix_acl_access"
		case paxACLDefault:
			name = "system.posix_acl_default"
		default:
			continue
		}
		value, err := aclXattr(v)
		if err != nil {
			bad++
			continue
		}
		set(name, string(value))
	}
	return attrs, bad
}

func specialBits(mode int64) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
