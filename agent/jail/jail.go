// Package jail confines one data-mover job. The job runs in a mount namespace of its
// own whose root holds only what the job needs: the volume (mounted so that no symlink
// in it is ever followed, and read-only for a backup), the job's own work and cache
// directories, a filesystem store, the restic binary, CA roots and DNS configuration.
// Other pods' volumes, the agent's ServiceAccount token and other jobs' credentials
// have no path in it, and the process that runs the job keeps only the capabilities
// that read and write files.
package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/holdfast-dev/holdfast/internal/hostpath"
)

// Where each part of a job appears inside the jail.
const (
	VolumePath = "/volume"
	WorkPath   = "/work"
	CachePath  = "/cache"
	ResticPath = "/restic"
	SelfPath   = "/holdfast"
)

// Spec is what one job may see. Empty paths are left out.
type Spec struct {
	// Volume is the volume directory: read-only unless Writable (a restore).
	Volume   string
	Writable bool
	// VolumeRoot, when set, is an allowed --host-path-roots directory and Volume a
	// path below it (a hostPath PersistentVolume): the volume is opened from the root
	// without following any symbolic link on the way (hostpath.Open), as tenants can
	// write the directories under a root.
	VolumeRoot string
	// Work is the job's private directory (repository config, temporary files).
	Work string
	// Cache is the repository cache the job may use.
	Cache string
	// Store is the directory of a filesystem storage location, bound at the same
	// path so that what the job reports names the store as users know it.
	Store string
	// Restic is the restic binary.
	Restic string
	// Self is the binary that runs the job inside the jail (see Exec).
	Self string
}

// hostFiles are read by a store client: the CA bundles Go and restic look for, and
// name resolution. Each one that exists is bound read-only at the same path.
var hostFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
	"/etc/resolv.conf",
	"/etc/hosts",
	"/etc/nsswitch.conf",
}

// Mount flags of the parts. No part lets set-user-ID bits or device nodes take effect;
// only the two binaries may be executed; nothing from the pod is ever followed.
const (
	dataFlags   = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOSYMFOLLOW
	binaryFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY
	hostFlags   = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY
)

// Enter builds the jail and makes it the root of the calling process. The process
// must be alone in a private mount namespace (the agent starts the data mover with
// CLONE_NEWNS): Enter refuses to change its parent's namespace. On error the process
// must exit; its namespace may be half built.
func Enter(s Spec) error {
	if err := checkPrivateNamespace(); err != nil {
		return err
	}
	if s.Volume == "" || s.Work == "" {
		return errors.New("a jail needs a volume and a work directory")
	}
	root := filepath.Join(s.Work, ".jail")
	if err := os.Mkdir(root, 0o700); err != nil {
		return fmt.Errorf("creating the jail's mount point: %w", err)
	}
	if err := unix.Mount("jail", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mounting the jail's root: %w", err)
	}
	volumeFlags := uintptr(dataFlags | unix.MS_RDONLY)
	if s.Writable {
		volumeFlags = dataFlags
	}
	binds := []bind{
		{src: s.Volume, dst: VolumePath, dir: true, flags: volumeFlags, noFollow: true, beneath: s.VolumeRoot},
		{src: s.Work, dst: WorkPath, dir: true, flags: dataFlags},
		{src: s.Cache, dst: CachePath, dir: true, flags: dataFlags, create: true},
		{src: s.Store, dst: s.Store, dir: true, flags: dataFlags},
		{src: s.Restic, dst: ResticPath, flags: binaryFlags},
		{src: s.Self, dst: SelfPath, flags: binaryFlags},
		// Writing to /dev/null must work, so it is not read-only.
		{src: "/dev/null", dst: "/dev/null", flags: unix.MS_NOSUID | unix.MS_NOEXEC},
	}
	for _, f := range append(hostFiles, os.Getenv("SSL_CERT_FILE")) {
		if f == "" || slices.ContainsFunc(binds, func(b bind) bool { return b.dst == f }) {
			continue
		}
		if real, err := filepath.EvalSymlinks(f); err == nil {
			binds = append(binds, bind{src: real, dst: f, flags: hostFlags})
		}
	}
	for _, b := range binds {
		if b.src == "" {
			continue
		}
		if err := b.mount(root); err != nil {
			return err
		}
	}
	// Make the jail the root, as switch_root does: move its mount over "/" and chroot
	// into it. Nothing outside it has a path any more; the chroot cannot be left
	// without CAP_SYS_CHROOT, which the job does not keep (see Exec).
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("entering the jail: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the jail over the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("changing the root to the jail: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("making the jail's root read-only: %w", err)
	}
	return nil
}

// bind is one source bound into the jail.
type bind struct {
	src, dst string
	dir      bool
	flags    uintptr
	// noFollow refuses a source that is itself a symlink (the volume: its owner must
	// not be able to point the jail elsewhere).
	noFollow bool
	// create makes a missing source directory (a cache used for the first time).
	create bool
	// beneath, when set, is the directory src is relative to and opened from
	// without following any link (hostpath.Open).
	beneath string
}

func (b bind) mount(root string) error {
	target := filepath.Join(root, b.dst)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("preparing %s in the jail: %w", b.dst, err)
	}
	if b.dir {
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("preparing %s in the jail: %w", b.dst, err)
		}
	} else if err := os.WriteFile(target, nil, 0o600); err != nil {
		return fmt.Errorf("preparing %s in the jail: %w", b.dst, err)
	}
	if b.create {
		if err := os.MkdirAll(b.src, 0o700); err != nil {
			return fmt.Errorf("creating %s for the jail: %w", b.src, err)
		}
	}
	flags := unix.O_PATH | unix.O_CLOEXEC
	if b.noFollow {
		flags |= unix.O_NOFOLLOW
	}
	if b.dir {
		flags |= unix.O_DIRECTORY
	}
	// Bind what was opened, not what the path names a moment later.
	fd, err := b.open(flags)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at %s in the jail: %w", b.src, b.dst, err)
	}
	// A bind mount takes its flags from a second, remounting call.
	if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|b.flags, ""); err != nil {
		return fmt.Errorf("restricting %s in the jail: %w", b.dst, err)
	}
	return nil
}

// open opens the source as an O_PATH descriptor.
func (b bind) open(flags int) (int, error) {
	if b.beneath != "" {
		fd, err := hostpath.Open(hostpath.Dir{Root: b.beneath, Rel: b.src})
		if err != nil {
			return -1, fmt.Errorf("opening the hostPath volume below its root for the jail: %w", err)
		}
		return fd, nil
	}
	fd, err := unix.Open(b.src, flags, 0)
	if err != nil {
		return -1, fmt.Errorf("opening %s for the jail: %w", b.src, err)
	}
	return fd, nil
}

// checkPrivateNamespace fails when the process shares its parent's mount namespace:
// building the jail there would change the agent's own view of the node.
func checkPrivateNamespace() error {
	own, err := OwnMountNamespace()
	if err != nil {
		return err
	}
	if !own {
		return errors.New("the data mover shares its parent's mount namespace; it must be started with CLONE_NEWNS")
	}
	return nil
}

// OwnMountNamespace tells whether this process has a mount namespace other than its
// parent's.
func OwnMountNamespace() (bool, error) {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return false, fmt.Errorf("reading the mount namespace: %w", err)
	}
	parent, err := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/mnt")
	if err != nil {
		return false, fmt.Errorf("reading the parent's mount namespace: %w", err)
	}
	return self != parent, nil
}

// JobCapabilities are what a job keeps: reading every file of a volume whoever owns it,
// and restoring owners, modes and times. Everything else, CAP_SYS_ADMIN and
// CAP_SYS_CHROOT above all (which could undo the jail), is dropped.
var JobCapabilities = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER, unix.CAP_FSETID,
}

// Exec replaces the calling process with path (a static binary inside the jail), its
// standard input reading stdin. The new program keeps only JobCapabilities (those the
// process has), and no_new_privs is set so that no later program can gain more.
// Exec returns only on error.
func Exec(path string, args, env []string, stdin []byte) error {
	fd, err := unix.MemfdCreate("job", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("passing the job to the confined mover: %w", err)
	}
	f := os.NewFile(uintptr(fd), "job")
	defer f.Close()
	if _, err := f.Write(stdin); err != nil {
		return fmt.Errorf("passing the job to the confined mover: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("passing the job to the confined mover: %w", err)
	}
	// Capabilities belong to threads. This thread drops them and then execs; with
	// no_new_privs the new program cannot have more than this thread had, although
	// it runs as root.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := keepOnly(JobCapabilities); err != nil {
		return fmt.Errorf("dropping the capabilities of the confined mover: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	if err := unix.Exec(path, args, env); err != nil {
		return fmt.Errorf("starting the confined mover %s: %w", path, err)
	}
	return nil
}

// keepOnly sets the calling thread's permitted and effective capabilities to those of
// keep it already has, and clears the inheritable and ambient ones.
func keepOnly(keep []uintptr) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var cur [2]unix.CapUserData
	if err := unix.Capget(&hdr, &cur[0]); err != nil {
		return err
	}
	var want [2]unix.CapUserData
	for _, c := range keep {
		bit := uint32(1) << (c % 32)
		if cur[c/32].Permitted&bit != 0 {
			want[c/32].Permitted |= bit
			want[c/32].Effective |= bit
		}
	}
	if err := unix.Capset(&hdr, &want[0]); err != nil {
		return err
	}
	return unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
}
