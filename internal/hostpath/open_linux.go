package hostpath

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Open opens the directory d as an O_PATH descriptor, walking from its root without
// following any symbolic link and without leaving the root (openat2 RESOLVE_BENEATH
// and RESOLVE_NO_SYMLINKS, Linux 5.6+): a tenant who can write one directory under a
// root cannot point Holdfast at another place of the node. The root itself is the
// admin's and is opened as named. Errors are ErrLink for a link or an escape; their
// text names no host path, as status messages are read by tenants.
func Open(d Dir) (int, error) {
	if d.Rel == "" || d.Rel == "." || hasDotDot(d.Rel) {
		return -1, fmt.Errorf("%w: the directory is the root itself or has \"..\" in it", ErrOutside)
	}
	root, err := unix.Open(d.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening its --host-path-roots directory (is it mounted into the agent?): %w", err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, d.Rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("%w: a component of its path below the allowed root is a symbolic link; Holdfast follows none there", ErrLink)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("its path below the allowed root is not a directory (%w)", err)
	default:
		return -1, fmt.Errorf("opening its directory below the allowed root: %w", err)
	}
}

// InHost returns where the agent sees the host directory root when the node's
// filesystem (or the part of it holding root) is mounted at host, following the
// links on the way as the node would (an absolute link stays inside host: openat2
// RESOLVE_IN_ROOT). Those links are the node admin's: below root, Open follows none.
// An empty host is "/": root is mounted at its own path.
func InHost(host, root string) (string, error) {
	if host == "" || host == "/" {
		return root, nil
	}
	hostFD, err := unix.Open(host, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("opening the node's filesystem as mounted into the agent: %w", err)
	}
	defer unix.Close(hostFD)
	fd, err := unix.Openat2(hostFD, strings.TrimPrefix(root, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return "", fmt.Errorf("opening its --host-path-roots directory in the node's filesystem as mounted into the agent (is the directory mounted?): %w", err)
	}
	defer unix.Close(fd)
	return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
}

// Check opens d as Open does and closes it: it tells the agent early, with a clear
// sentence, what the data mover's jail would refuse.
func Check(d Dir) error {
	fd, err := Open(d)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
