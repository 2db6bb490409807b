package confinedfs

import (
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// openDirFlags open a directory for the "at" calls; O_DIRECTORY fails on anything else
// (a FIFO swapped in would otherwise block the open).
const openDirFlags = os.O_RDONLY | unix.O_DIRECTORY

// chmodNoFollow sets the mode of name in directory dir, never that of a symlink's
// target. fchmodat2 (Linux 6.6) does it in one call and refuses a symlink with
// EOPNOTSUPP; before 6.6 the same error means the call is missing. Either way the
// entry is then opened without following it (O_PATH|O_NOFOLLOW): a symlink is
// refused, anything else is changed through /proc/self/fd, which names exactly the
// opened inode, as the C libraries emulate fchmodat2.
func chmodNoFollow(dir *os.File, name string, mode fs.FileMode) error {
	return atDir(dir, "fchmodat", name, func(dirfd int) error {
		err := unix.Fchmodat(dirfd, name, unixMode(mode), unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EOPNOTSUPP {
			return err
		}
		return chmodByDescriptor(dirfd, name, mode)
	})
}

// chmodByDescriptor is chmodNoFollow without fchmodat2.
func chmodByDescriptor(dirfd int, name string, mode fs.FileMode) error {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return ErrReplacedBySymlink
	}
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), unixMode(mode))
}

// chtimesNoFollow sets the access and modification times of name in dir to t; on a
// symlink it sets the link's own times.
func chtimesNoFollow(dir *os.File, name string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return atDir(dir, "utimensat", name, func(dirfd int) error {
		return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// atDir runs op on the descriptor of dir and names its error after the call.
func atDir(dir *os.File, call, name string, op func(dirfd int) error) error {
	rc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = op(int(fd)) }); err != nil {
		return err
	}
	if opErr != nil && opErr != ErrReplacedBySymlink {
		return &os.PathError{Op: call, Path: name, Err: opErr}
	}
	return opErr
}

// unixMode is the mode word of the system calls for m: permissions and the set-id and
// sticky bits.
func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode
}

// mknodAt makes name in dir a FIFO or device node of mode m (type and permission
// bits) and device number dev.
func mknodAt(dir *os.File, name string, m fs.FileMode, dev uint64) error {
	typ := uint32(unix.S_IFIFO)
	switch {
	case m&fs.ModeCharDevice != 0:
		typ = unix.S_IFCHR
	case m&fs.ModeDevice != 0:
		typ = unix.S_IFBLK
	}
	return atDir(dir, "mknodat", name, func(dirfd int) error {
		return unix.Mknodat(dirfd, name, typ|unixMode(m&modeBits), int(dev))
	})
}

// Mkdev is the device number of major and minor.
func Mkdev(major, minor uint32) uint64 { return unix.Mkdev(major, minor) }

// setxattrNoFollow sets the extended attribute attr of name in dir, never that of a
// symlink's target: the entry is opened without following (O_NOFOLLOW, and
// O_NONBLOCK so that a FIFO does not wait for a writer) and changed through the
// descriptor. Not through /proc/self/fd: the data mover's jail has no /proc. A
// symlink (Linux allows no user.* attribute there), a device node (opening one can
// act on the device) and a socket are refused.
func setxattrNoFollow(dir *os.File, name, attr string, value []byte) error {
	return atDir(dir, "setxattr", name, func(dirfd int) error {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO:
		case unix.S_IFLNK:
			return ErrReplacedBySymlink
		default:
			return unix.EOPNOTSUPP
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err == unix.ELOOP {
			return ErrReplacedBySymlink
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR && t != unix.S_IFIFO {
			return unix.EOPNOTSUPP // swapped for a device since the check
		}
		return unix.Fsetxattr(fd, attr, value, 0)
	})
}
