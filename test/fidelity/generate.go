package fidelity

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Paths of the generated tree's cases, for lists of known differences.
const (
	Deep          = "deep/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/leaf.txt"
	Empty         = "empty"
	Locked        = "locked-0000"      // mode 0000, owned by another user
	LockedDir     = "locked-dir-0700"  // a directory only another user may enter
	Setuid        = "bin/setuid-tool"  // setuid and setgid, owned by root
	StickyDir     = "tmp-sticky"       // a sticky, world-writable directory
	Sparse        = "sparse.img"       // a hole, data, a hole
	LinkIn        = "link-in"          // a symlink to a file in the volume
	LinkDir       = "link-dir"         // a symlink to a directory in the volume
	LinkOut       = "link-out"         // a symlink to an absolute path outside the volume
	LinkUp        = "link-up"          // a symlink that climbs out of the volume
	LinkDangling  = "link-dangling"    // a symlink to nothing
	FIFO          = "fifo"             // a named pipe
	Socket        = "socket"           // a Unix socket left by a process
	CharDev       = "dev-null"         // a character device (1,3)
	HardA         = "hard/a"           // three names of one file
	HardB         = "hard/b"           //
	HardC         = "hard-c"           //
	BadUTF8       = "bad-\xff\xfe.txt" // a name that is not valid UTF-8
	BadUTF8Dir    = "dir-\xc3\x28"     // a directory whose name is not valid UTF-8
	XattrFile     = "xattr/file"       // user.* and trusted.* attributes
	XattrDir      = "xattr"            // a user.* attribute on a directory
	ACLFile       = "acl/file"         // system.posix_acl_access
	ACLDir        = "acl"              // system.posix_acl_access and _default
	CapFile       = "bin/cap-tool"     // security.capability (cap_net_bind_service)
	NearlyEmpty   = "one-byte"         //
	ZeroFile      = "zeros.bin"        // all zeros: restored as a hole, size kept
	UnicodeName   = "naïve-☃.txt"      // valid UTF-8 beyond ASCII
	SpaceNewline  = "a name\nwith newline and space "
	OtherOwnedDir = "other-owned" // a directory owned by another user and group
	FIFOBadUTF8   = "fifo-\xff"   // a FIFO whose name is not UTF-8
	FIFOLookalike = "fifo-\uFFFD" // an empty file named as the FIFO's name shows in UTF-8
	HardBadTarget = "hard-target" // a file with a second name that is not UTF-8
	HardBadUTF8   = "hard-\xff"   // that second name
	HardLookalike = "hard-\uFFFD" // another file, named as that name shows in UTF-8
)

// LongName is a name of 255 bytes, the most a Linux file system allows.
var LongName = strings.Repeat("L", 251) + ".txt"

// EscapeLookalikes are names that look like encodings of invalid UTF-8: an escaping
// scheme must keep them apart from the names they look like.
// The "%hf%" ones look like Holdfast's own encoding for kopia (kopiarestore.EncodeName).
var EscapeLookalikes = []string{"bad-%FF%FE.txt", "bad-\\xff\\xfe.txt", "bad-%25FF.txt", "bad-\uFFFD\uFFFD.txt", "bad-~ff~fe.txt",
	"%hf%bad-%FF%FE.txt", "%hf%", "%hf%%25"}

const otherUID, otherGID = 4321, 8765

// Generate builds the tree of every case into dir (which must exist and be empty) and
// returns the cases it left out (a reason per path): what needs root (ownership, device
// nodes, trusted.* and security.* attributes) when not run as root, and attributes the
// file system refuses.
func Generate(dir string) (skipped map[string]string, err error) {
	g := &generator{dir: dir, skipped: map[string]string{}, root: os.Geteuid() == 0}
	g.build()
	if g.err != nil {
		return nil, g.err
	}
	return g.skipped, nil
}

type generator struct {
	dir     string
	root    bool
	skipped map[string]string
	err     error
	times   []string // every path, in creation order, to date at the end
}

func (g *generator) p(rel string) string { return filepath.Join(g.dir, rel) }

func (g *generator) check(err error) {
	if err != nil && g.err == nil {
		g.err = err
	}
}

func (g *generator) file(rel string, content []byte, perm os.FileMode) {
	g.mkdirs(filepath.Dir(rel))
	g.check(os.WriteFile(g.p(rel), content, perm))
	g.check(os.Chmod(g.p(rel), perm))
	g.times = append(g.times, rel)
}

func (g *generator) mkdirs(rel string) {
	if rel == "." {
		return
	}
	if _, err := os.Lstat(g.p(rel)); err == nil {
		return
	}
	g.mkdirs(filepath.Dir(rel))
	g.check(os.Mkdir(g.p(rel), 0o755))
	g.times = append(g.times, rel)
}

func (g *generator) symlink(rel, target string) {
	g.mkdirs(filepath.Dir(rel))
	g.check(os.Symlink(target, g.p(rel)))
	g.times = append(g.times, rel)
}

func (g *generator) chown(rel string, uid, gid int) {
	if !g.root {
		g.skipped[rel] = "owned by another user: needs root"
		return
	}
	g.check(os.Lchown(g.p(rel), uid, gid))
}

func (g *generator) xattr(rel, name string, value []byte) {
	err := unix.Lsetxattr(g.p(rel), name, value, 0)
	if err == unix.EPERM || err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		g.skipped[rel] = fmt.Sprintf("extended attribute %s: %v", name, err)
		return
	}
	g.check(err)
}

func (g *generator) build() {
	g.file(Deep, []byte("at the bottom\n"), 0o644)
	g.file(Empty, nil, 0o644)
	g.file(NearlyEmpty, []byte("x"), 0o600)
	g.file(LongName, []byte("a long name\n"), 0o644)
	g.file(UnicodeName, []byte("snow\n"), 0o644)
	g.file(SpaceNewline, []byte("odd name\n"), 0o644)
	g.file(BadUTF8, []byte("latin-1 bytes\n"), 0o644)
	for i, n := range EscapeLookalikes {
		g.file(n, []byte(fmt.Sprintf("look-alike %d\n", i)), 0o644)
	}
	g.mkdirs(BadUTF8Dir)
	g.file(BadUTF8Dir+"/inside", []byte("in a badly named directory\n"), 0o644)

	g.file(Locked, []byte("nobody may read this but root\n"), 0)
	g.chown(Locked, otherUID, otherGID)
	g.mkdirs(LockedDir)
	g.file(LockedDir+"/secret", []byte("behind a locked door\n"), 0o600)
	g.chown(LockedDir+"/secret", otherUID, otherGID)
	g.chown(LockedDir, otherUID, otherGID)
	g.check(os.Chmod(g.p(LockedDir), 0o700))
	g.mkdirs(OtherOwnedDir)
	g.chown(OtherOwnedDir, otherUID, otherGID)

	g.file(Setuid, []byte("#!/bin/sh\necho setuid\n"), 0o755)
	g.check(os.Chmod(g.p(Setuid), 0o755|os.ModeSetuid|os.ModeSetgid))
	g.mkdirs(StickyDir)
	g.check(os.Chmod(g.p(StickyDir), 0o777|os.ModeSticky))

	g.sparse()
	g.file(ZeroFile, make([]byte, 64<<10), 0o644)

	g.file("target.txt", []byte("pointed at\n"), 0o644)
	g.symlink(LinkIn, "target.txt")
	g.symlink(LinkDir, "deep/d")
	g.symlink(LinkOut, "/etc/hostname")
	g.symlink(LinkUp, "../../outside")
	g.symlink(LinkDangling, "does/not/exist")
	g.chown(LinkIn, otherUID, otherGID)

	g.check(unix.Mkfifo(g.p(FIFO), 0o640))
	g.times = append(g.times, FIFO)
	g.socket()
	if g.root {
		g.check(unix.Mknod(g.p(CharDev), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		g.times = append(g.times, CharDev)
	} else {
		g.skipped[CharDev] = "device node: needs root"
	}

	// Names that differ only in bytes that are not UTF-8 and U+FFFD: a restore that
	// sees names through a UTF-8-only listing must not take one for the other.
	g.check(unix.Mkfifo(g.p(FIFOBadUTF8), 0o600))
	g.times = append(g.times, FIFOBadUTF8)
	g.file(FIFOLookalike, nil, 0o600)
	g.file(HardBadTarget, []byte("linked from a name that is not UTF-8\n"), 0o644)
	g.check(os.Link(g.p(HardBadTarget), g.p(HardBadUTF8)))
	g.times = append(g.times, HardBadUTF8)
	g.file(HardLookalike, []byte("not a link\n"), 0o644)

	g.file(HardA, []byte("one inode, three names\n"), 0o644)
	g.mkdirs(filepath.Dir(HardC))
	g.check(os.Link(g.p(HardA), g.p(HardB)))
	g.check(os.Link(g.p(HardA), g.p(HardC)))
	g.times = append(g.times, HardB, HardC)

	g.file(XattrFile, []byte("annotated\n"), 0o644)
	g.xattr(XattrFile, "user.app.checksum", []byte("sha256:0123abcd"))
	g.xattr(XattrFile, "user.binary", []byte{0, 1, 2, 0xff})
	g.xattr(XattrFile, "user.empty", nil)
	if g.root {
		g.xattr(XattrFile, "trusted.overlay.opaque", []byte("y"))
	}
	g.xattr(XattrDir, "user.dir", []byte("on a directory"))

	g.file(ACLFile, []byte("shared with one more user\n"), 0o640)
	g.xattr(ACLFile, "system.posix_acl_access", acl(aclEntry{aclUserObj, 6, 0}, aclEntry{aclUser, 4, otherUID},
		aclEntry{aclGroupObj, 4, 0}, aclEntry{aclMask, 4, 0}, aclEntry{aclOther, 0, 0}))
	g.xattr(ACLDir, "system.posix_acl_default", acl(aclEntry{aclUserObj, 7, 0}, aclEntry{aclGroupObj, 5, 0},
		aclEntry{aclGroup, 5, otherGID}, aclEntry{aclMask, 5, 0}, aclEntry{aclOther, 0, 0}))

	g.file(CapFile, []byte("#!/bin/sh\necho capable\n"), 0o755)
	if g.root {
		// After every chown: changing the owner clears a file capability.
		g.xattr(CapFile, "security.capability", capability(10)) // cap_net_bind_service
	} else {
		g.skipped[CapFile] = "security.capability: needs root"
	}
	// The volume's root: a database's data directory is often 0700 or 0750 and
	// owned by the database's user.
	g.check(os.Chmod(g.dir, 0o750))
	g.chown(".", otherUID, otherGID)
	g.xattr(".", "user.volume", []byte("on the volume's root"))
	g.date()
}

// sparse writes Sparse: 1 MiB hole, 4 KiB of data, 1 MiB hole.
func (g *generator) sparse() {
	f, err := os.Create(g.p(Sparse))
	if err != nil {
		g.check(err)
		return
	}
	_, err = f.WriteAt([]byte(strings.Repeat("data", 1024)), 1<<20)
	g.check(err)
	g.check(f.Truncate(2<<20 + 4096))
	g.check(f.Close())
	g.times = append(g.times, Sparse)
}

// socket leaves a Unix socket behind, as a process that exited without removing it.
func (g *generator) socket() {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: g.p(Socket), Net: "unix"})
	if err != nil {
		g.check(err)
		return
	}
	l.SetUnlinkOnClose(false)
	g.check(l.Close())
	g.times = append(g.times, Socket)
}

// date gives every entry its own modification time with nanoseconds, entries before
// their directories (writing an entry changes its directory's time), the root last.
func (g *generator) date() {
	base := time.Date(2024, 2, 29, 12, 34, 56, 123456789, time.UTC)
	paths := append([]string{}, g.times...)
	sort.SliceStable(paths, func(i, j int) bool { return depth(paths[i]) > depth(paths[j]) })
	for i, rel := range append(paths, ".") {
		t := base.Add(time.Duration(i)*time.Hour + time.Duration(i)*time.Microsecond)
		ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
		g.check(unix.UtimesNanoAt(unix.AT_FDCWD, g.p(rel), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func depth(rel string) int { return strings.Count(rel, "/") }

// POSIX ACLs as the kernel stores them in system.posix_acl_* (posix_acl_xattr.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclUndefID  = 0xffffffff
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

func acl(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range entries {
		id := e.id
		if e.tag != aclUser && e.tag != aclGroup {
			id = aclUndefID
		}
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}

// capability is a security.capability value (VFS_CAP_REVISION_2, effective) granting
// capability number c, permitted.
func capability(c uint) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000000|1)
	b = binary.LittleEndian.AppendUint32(b, 1<<c) // permitted, low word
	b = binary.LittleEndian.AppendUint32(b, 0)    // inheritable, low word
	b = binary.LittleEndian.AppendUint32(b, 0)    // permitted, high word
	return binary.LittleEndian.AppendUint32(b, 0) // inheritable, high word
}
