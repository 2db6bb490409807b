//go:build !linux

package confinedfs

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// openDirFlags open a directory for chmodNoFollow and chtimesNoFollow.
const openDirFlags = os.O_RDONLY

// chmodNoFollow sets the mode of name in dir unless it is a symlink. Outside Linux,
// where the agent does not run, the check and the change are two steps.
func chmodNoFollow(dir *os.File, name string, mode fs.FileMode) error {
	path := dir.Name() + string(os.PathSeparator) + name
	if st, err := os.Lstat(path); err != nil {
		return err
	} else if st.Mode()&fs.ModeSymlink != 0 {
		return ErrReplacedBySymlink
	}
	return os.Chmod(path, mode)
}

// chtimesNoFollow sets the times of name in dir unless it is a symlink.
func chtimesNoFollow(dir *os.File, name string, t time.Time) error {
	path := dir.Name() + string(os.PathSeparator) + name
	if st, err := os.Lstat(path); err != nil {
		return err
	} else if st.Mode()&fs.ModeSymlink != 0 {
		return ErrReplacedBySymlink
	}
	return os.Chtimes(path, t, t)
}

// mknodAt is not supported outside Linux, where the agent does not run.
func mknodAt(*os.File, string, fs.FileMode, uint64) error { return errors.ErrUnsupported }

// Mkdev is the device number of major and minor (Linux's encoding).
func Mkdev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// setxattrNoFollow is not supported outside Linux, where the agent does not run.
func setxattrNoFollow(*os.File, string, string, []byte) error { return errors.ErrUnsupported }
