package volumepath

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// isMountPoint reports whether dir is the root of a mount, as a CSI, local or NFS
// volume directory is once the kubelet has set it up. Where the kernel says so
// (statx STATX_ATTR_MOUNT_ROOT, Linux 5.8+) that answer is used, which also sees
// bind mounts of a directory on the same filesystem (local volumes); otherwise a
// device other than its parent's is.
func isMountPoint(dir string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		return false, fmt.Errorf("statx %s: %w", dir, err)
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var parent unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, filepath.Dir(dir), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &parent); err != nil {
		return false, fmt.Errorf("statx %s: %w", filepath.Dir(dir), err)
	}
	return st.Dev_major != parent.Dev_major || st.Dev_minor != parent.Dev_minor, nil
}
