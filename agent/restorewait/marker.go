package restorewait

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// The marker protocol between the agent (root) and restore-wait (any user).
//
// In the marker volume (a pod admitted with one, see MarkerVolumeOf):
//
//   - The marker volume is a memory emptyDir of the pod that only its restore-wait
//     containers mount, read-only; the agent checks that before it writes (an
//     application container that mounted it could forge a marker). Before its first
//     marker the agent makes the directory root's, mode 0755, on a descriptor that did
//     not follow a symlink; restore-wait reads markers only in a directory that is
//     root's and writable by no one else.
//   - A marker is a regular file owned by root, mode 0644, written in one step (a
//     temporary file renamed): <restore uid>.<volume> when that volume is restored,
//     with FailedSuffix holding the reason otherwise (VolumeMarkerName).
//   - restore-wait opens nothing of the application's volumes, so their owners and
//     modes (a database's 0700 data directory) do not matter, and it leaves the
//     markers: the volume is the pod's own and goes with it, and an init container
//     that runs again (the kubelet made the pod's sandbox again) finds them and lets
//     the application start again at once.
//
// In the volumes themselves (a pod admitted before the marker volume):
//
//   - .holdfast at the volume root is a real directory owned by the user and group
//     restore-wait runs as, mode 0700: nobody else (root aside) can create, rename or
//     remove an entry in it, and restore-wait can remove the markers. When the pod does
//     not say which user that is (the image's default user applies), the directory is
//     root's, mode 0755: restore-wait can read the markers but not remove them.
//   - A marker is a regular file owned by root (the agent), mode 0644: <restore uid>
//     when the volume is restored, <restore uid>.failed holding the reason otherwise.
//   - restore-wait accepts a marker only under those conditions and says, once, why it
//     ignores one that is not: a container sharing the volume (another pod on a
//     ReadWriteMany claim, a sidecar) can neither release restore-wait before the data is
//     there nor fake or hide a failure, unless it runs as root or as restore-wait's user.
//   - Neither side follows a symlink: both work on directory descriptors opened with
//     O_NOFOLLOW, and the agent replaces a .holdfast of another type, owner or mode.
//     restore-wait must be able to open the volume's root.
const (
	markerVolumeMode     = 0o755 // the marker volume, owned by root
	markerDirMode        = 0o700 // owned by restore-wait's user
	markerDirModeAsRoot  = 0o755 // owned by root, when restore-wait's user is not known
	markerFileMode       = 0o644
	markerTempPrefix     = ".writing-"
	maxFailureReasonSize = 4 << 10
)

// Owner is the user and group restore-wait runs as; -1 where the pod does not say.
type Owner struct {
	UID, GID int64
}

// UnknownOwner is the Owner of a restore-wait whose user the pod does not set.
var UnknownOwner = Owner{UID: -1, GID: -1}

// RunsAs returns the user and group of the pod's restore-wait container for
// restoreUID, from its securityContext and then the pod's; UnknownOwner when there is
// no such container or neither sets the user.
func RunsAs(pod *corev1.Pod, restoreUID string) Owner {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !waitsFor(c, restoreUID) {
			continue
		}
		owner := UnknownOwner
		if psc := pod.Spec.SecurityContext; psc != nil {
			if psc.RunAsUser != nil {
				owner.UID = *psc.RunAsUser
			}
			if psc.RunAsGroup != nil {
				owner.GID = *psc.RunAsGroup
			}
		}
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				owner.UID = *sc.RunAsUser
			}
			if sc.RunAsGroup != nil {
				owner.GID = *sc.RunAsGroup
			}
		}
		if owner.UID < 0 {
			// The image's default user, which the pod does not tell; its group too.
			return UnknownOwner
		}
		return owner
	}
	return UnknownOwner
}

// Holds reports whether restore-wait for restoreUID is one of the pod's init
// containers: only then does a restore write a marker (in a running pod's volume
// nobody would remove it).
func Holds(pod *corev1.Pod, restoreUID string) bool {
	for i := range pod.Spec.InitContainers {
		if waitsFor(&pod.Spec.InitContainers[i], restoreUID) {
			return true
		}
	}
	return false
}

// waitsFor says whether c is restore-wait for restoreUID (the webhook gives it the
// arguments --restore-uid <uid>).
func waitsFor(c *corev1.Container, restoreUID string) bool {
	return restoreUID != "" && UIDOf(c) == restoreUID
}

// testHookMarkerDirMade runs, in tests, between the agent's mkdir of .holdfast and
// its open: where a container sharing the volume would swap in a symlink.
var testHookMarkerDirMade = func() {}

// WriteMarkerFor tells the restore-wait of the pod with UID podUID how the restore of
// the volume at volumeDir ended: restored when failure is "", failed for that reason
// otherwise (see MarkerName; podUID "" writes the marker every restore-wait of the
// restore without a pod UID reads). The restore of a claim that several held pods
// mount writes one for each. It runs in the agent, as root.
func WriteMarkerFor(volumeDir, restoreUID, podUID string, owner Owner, failure string) error {
	if err := checkUID(restoreUID); err != nil {
		return err
	}
	if podUID != "" {
		if err := checkUID(podUID); err != nil {
			return err
		}
	}
	vol, err := unix.Open(volumeDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: volumeDir, Err: err}
	}
	defer unix.Close(vol)
	dir, err := markerDir(vol, owner)
	if err != nil {
		return fmt.Errorf("preparing %s in %s: %w", MarkerDir, volumeDir, err)
	}
	defer unix.Close(dir)
	name, content := MarkerName(restoreUID, podUID), "restored\n"
	if failure != "" {
		name, content = name+FailedSuffix, failure+"\n"
	}
	if err := writeFileAt(dir, name, content); err != nil {
		return fmt.Errorf("writing %s/%s in %s: %w", MarkerDir, name, volumeDir, err)
	}
	return nil
}

// Marked tells the agent which marker of restoreUID the restore-wait of the pod with
// UID podUID (see MarkerName), running as reader, already has in the volume at
// volumeDir: a done- or failure marker the agent wrote, in a .holdfast that reader can
// open. owner is the Owner to write that pod's marker with (WriteMarkerFor): the
// owner of the .holdfast there when reader can use it, so that it and the markers of
// other pods in it (a shared claim) are kept; else reader, or, when a .holdfast that
// reader cannot open is there (another restore-wait's user's), root's (mode 0755,
// which every restore-wait can read).
func Marked(volumeDir, restoreUID, podUID string, reader Owner) (done, failed bool, owner Owner, err error) {
	if err := checkUID(restoreUID); err != nil {
		return false, false, reader, err
	}
	vol, err := unix.Open(volumeDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, false, reader, &os.PathError{Op: "open", Path: volumeDir, Err: err}
	}
	defer unix.Close(vol)
	dir, err := unix.Openat(vol, MarkerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return false, false, reader, nil // none, or something WriteMarkerFor replaces
	case err != nil:
		return false, false, reader, fmt.Errorf("opening %s in %s: %w", MarkerDir, volumeDir, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return false, false, reader, err
	}
	switch mode := uint32(st.Mode) & 0o7777; {
	case st.Uid == 0 && st.Gid == 0 && mode == markerDirModeAsRoot:
		owner = UnknownOwner // every restore-wait reads it
	case mode == markerDirMode && reader.UID >= 0 && uint32(reader.UID) == st.Uid:
		owner = Owner{UID: int64(st.Uid), GID: int64(st.Gid)}
	default:
		// Not one reader can open: made for another restore-wait's user, or not by
		// the agent. Root's is the one every restore-wait can read.
		return false, false, UnknownOwner, nil
	}
	name := MarkerName(restoreUID, podUID)
	found := func(n string) (bool, error) {
		var fst unix.Stat_t
		err := unix.Fstatat(dir, n, &fst, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("looking for %s/%s in %s: %w", MarkerDir, n, volumeDir, err)
		}
		return notFromAgent(MarkerDir+"/", n, &fst) == "", nil
	}
	if done, err = found(name); err != nil {
		return false, false, owner, err
	}
	if failed, err = found(name + FailedSuffix); err != nil {
		return false, false, owner, err
	}
	return done, failed, owner, nil
}

// markerDir returns a descriptor of .holdfast in vol, owned and with the mode the
// protocol says, replacing whatever else is there (never following it).
func markerDir(vol int, owner Owner) (int, error) {
	uid, gid, mode := owner.UID, owner.GID, uint32(markerDirMode)
	if uid < 0 {
		uid, gid, mode = 0, 0, markerDirModeAsRoot
	}
	if gid < 0 {
		gid = 0
	}
	const attempts = 5
	for range attempts {
		fd, err := unix.Openat(vol, MarkerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				return -1, err
			}
			if int64(st.Uid) == uid && int64(st.Gid) == gid && uint32(st.Mode)&0o7777 == mode {
				return fd, nil
			}
			// Made by someone else, or for a restore-wait of another user: its
			// markers cannot be trusted and the right user may not be able to use it.
			unix.Close(fd)
			if err := removeAllAt(vol, MarkerDir); err != nil {
				return -1, err
			}
		case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
			// A symlink or a file: removed, never followed.
			if err := unix.Unlinkat(vol, MarkerDir, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return -1, err
			}
		case errors.Is(err, unix.ENOENT):
		default:
			return -1, err
		}
		if err := unix.Mkdirat(vol, MarkerDir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
		testHookMarkerDirMade()
		fd, err = unix.Openat(vol, MarkerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // replaced meanwhile: start over
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || int(st.Uid) != os.Geteuid() {
			// Not the directory this agent made: start over.
			unix.Close(fd)
			continue
		}
		// On the descriptor, so whatever is at the name by now is not touched. Until
		// here the directory is the agent's, 0700: nobody else could write into it.
		if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
			unix.Close(fd)
			return -1, err
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	return -1, fmt.Errorf("%s was replaced %d times while it was being made; something in the pod keeps replacing it", MarkerDir, attempts)
}

// writeFileAt writes name in dir in one step, as restore-wait must never read half a
// reason: a temporary file, then a rename over whatever is at name.
func writeFileAt(dir int, name, content string) error {
	tmp := markerTempPrefix + name
	if err := unix.Unlinkat(dir, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, markerFileMode)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Chmod(markerFileMode) // past the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, name)
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
	}
	return err
}

// removeAllAt removes name in dir and everything below it, following no symlink.
func removeAllAt(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	sub, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(sub), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(sub, n); err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dir, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// geteuid is the user restore-wait runs as; tests set another.
var geteuid = os.Geteuid

// markerState is what restore-wait finds in one volume.
type markerState struct {
	done   bool
	failed bool
	reason string // why the agent failed the restore
	// ignored says why something at a marker's place is not taken as one.
	ignored string
}

// readMarkers looks for the markers named marker (MarkerName) in .holdfast of the
// volume mounted at volume.
func readMarkers(volume, marker string) (markerState, error) {
	vol, err := unix.Open(volume, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return markerState{}, &os.PathError{Op: "open", Path: volume, Err: err}
	}
	defer unix.Close(vol)
	dir, ignored, err := openMarkerDir(vol)
	if err != nil || dir < 0 {
		return markerState{ignored: ignored}, err
	}
	defer unix.Close(dir)
	return readMarkerFiles(dir, MarkerDir+"/", marker)
}

// readMarkerFiles looks for the markers named marker in the open directory dir, named
// where (ending in /) in what it says.
func readMarkerFiles(dir int, where, marker string) (markerState, error) {
	var st markerState
	failed, why, err := readAgentFile(dir, where, marker+FailedSuffix)
	switch {
	case err != nil:
		return st, err
	case why != "":
		st.ignored = why
	case failed != nil:
		st.failed, st.reason = true, string(failed)
		return st, nil
	}
	var fst unix.Stat_t
	err = unix.Fstatat(dir, marker, &fst, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("looking for the done-marker: %w", err)
	}
	if why := notFromAgent(where, marker, &fst); why != "" {
		st.ignored = why
		return st, nil
	}
	st.done = true
	return st, nil
}

// openMarkerDir opens .holdfast in vol if it is as the agent makes it; otherwise it
// returns -1 and, when something is there, why it is ignored.
func openMarkerDir(vol int) (int, string, error) {
	fd, err := unix.Openat(vol, MarkerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, "", nil
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
		return -1, MarkerDir + " is not a directory (a symlink or a file)", nil
	case errors.Is(err, unix.EACCES):
		var st unix.Stat_t
		if unix.Fstatat(vol, MarkerDir, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return -1, fmt.Sprintf("%s is owned by uid %d, mode %04o, and this container (uid %d) cannot open it", MarkerDir, st.Uid, st.Mode&0o7777, geteuid()), nil
		}
		return -1, "", fmt.Errorf("opening %s: %w", MarkerDir, err)
	case err != nil:
		return -1, "", fmt.Errorf("opening %s: %w", MarkerDir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	euid := uint32(geteuid())
	if (st.Uid != euid && st.Uid != 0) || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Sprintf("%s is owned by uid %d with mode %04o; the agent makes it owned by this container's user (uid %d) or root, writable by no one else", MarkerDir, st.Uid, st.Mode&0o7777, euid), nil
	}
	return fd, "", nil
}

// readAgentFile reads name in dir if the agent wrote it; why says why a file there is
// ignored; both are empty when there is none.
func readAgentFile(dir int, where, name string) (content []byte, why string, err error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, "", nil
	case errors.Is(err, unix.ELOOP):
		return nil, where + name + " is a symlink, not a marker of the agent", nil
	case errors.Is(err, unix.EACCES):
		return nil, where + name + " cannot be read by this container; the agent makes its markers readable by all", nil
	case err != nil:
		return nil, "", fmt.Errorf("opening %s%s: %w", where, name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, "", err
	}
	if why := notFromAgent(where, name, &st); why != "" {
		return nil, why, nil
	}
	buf := make([]byte, maxFailureReasonSize)
	n, err := f.Read(buf)
	if err != nil && n == 0 && st.Size > 0 {
		return nil, "", fmt.Errorf("reading %s%s: %w", where, name, err)
	}
	return buf[:n], "", nil
}

// notFromAgent says why a marker with this stat was not written by the agent, or "".
func notFromAgent(where, name string, st *unix.Stat_t) string {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return where + name + " is not a regular file, not a marker of the agent"
	case st.Uid != 0:
		return where + name + " is owned by uid " + strconv.FormatUint(uint64(st.Uid), 10) + ", not by the agent (root): something else wrote it"
	}
	return ""
}

// removeMarker removes the done-marker named marker and, if then empty, .holdfast.
func removeMarker(volume, marker string) error {
	vol, err := unix.Open(volume, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(vol)
	dir, _, err := openMarkerDir(vol)
	if err != nil || dir < 0 {
		return err
	}
	err = unix.Unlinkat(dir, marker, 0)
	unix.Close(dir)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	// Left when another restore's marker, or another pod's, is still in it.
	_ = unix.Unlinkat(vol, MarkerDir, unix.AT_REMOVEDIR)
	return nil
}

// checkUID refuses a restore uid that is not one file name.
func checkUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || len(uid) > 253 {
		return fmt.Errorf("--%s %q is not a UID", FlagRestoreUID, uid)
	}
	for _, r := range uid {
		if r == '/' || r == '\\' || r == 0 {
			return fmt.Errorf("--%s %q is not a UID", FlagRestoreUID, uid)
		}
	}
	return nil
}
