package restorewait

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// The marker volume: the agent's side (WriteVolumeMarker, VolumeMarked) and
// restore-wait's (readVolumeMarkers). The protocol is described in marker.go.

// WriteVolumeMarker tells the restore-wait of a pod how the restore restoreUID of its
// volume named volume ended, in the pod's marker volume, whose directory on the node
// is markerDir: restored when failure is "", failed for that reason otherwise
// (VolumeMarkerName). It runs in the agent, as root, and makes the directory root's,
// mode 0755, first.
func WriteVolumeMarker(markerDir, restoreUID, volume, failure string) error {
	if err := checkUID(restoreUID); err != nil {
		return err
	}
	if err := checkName(volume); err != nil {
		return err
	}
	dir, err := unix.Open(markerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: markerDir, Err: err}
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return err
	}
	// The kubelet makes an emptyDir 0777 (with the pod's fsGroup, setgid): nobody but
	// restore-wait mounts it, and from now on nobody but root may write in it.
	if st.Uid != 0 || st.Gid != 0 {
		if err := unix.Fchown(dir, 0, 0); err != nil {
			return fmt.Errorf("making the marker volume root's: %w", err)
		}
	}
	if uint32(st.Mode)&0o7777 != markerVolumeMode {
		if err := unix.Fchmod(dir, markerVolumeMode); err != nil {
			return fmt.Errorf("making the marker volume writable by root only: %w", err)
		}
	}
	name, content := VolumeMarkerName(restoreUID, volume), "restored\n"
	if failure != "" {
		name, content = name+FailedSuffix, failure+"\n"
	}
	if err := writeFileAt(dir, name, content); err != nil {
		return fmt.Errorf("writing %s in the marker volume: %w", name, err)
	}
	return nil
}

// VolumeMarked says which marker of the restore restoreUID of the pod's volume named
// volume the agent has written in the pod's marker volume, whose directory on the
// node is markerDir: the restore-wait of the pod takes it as soon as it is there, and
// it stays there.
func VolumeMarked(markerDir, restoreUID, volume string) (done, failed bool, err error) {
	if err := checkUID(restoreUID); err != nil {
		return false, false, err
	}
	if err := checkName(volume); err != nil {
		return false, false, err
	}
	st, err := readVolumeMarkers(markerDir, VolumeMarkerName(restoreUID, volume))
	return st.done, st.failed, err
}

// readVolumeMarkers looks for the markers named marker (VolumeMarkerName) in the
// marker volume mounted at markerDir. Markers count only once the agent has made the
// directory root's and writable by no one else; before that (the kubelet makes it
// 0777) a file at a marker's place is ignored, with the reason.
func readVolumeMarkers(markerDir, marker string) (markerState, error) {
	dir, err := unix.Open(markerDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return markerState{}, &os.PathError{Op: "open", Path: markerDir, Err: err}
	}
	defer unix.Close(dir)
	var dst unix.Stat_t
	if err := unix.Fstat(dir, &dst); err != nil {
		return markerState{}, err
	}
	st, err := readMarkerFiles(dir, markerDir+"/", marker)
	if err != nil {
		return st, err
	}
	if (st.done || st.failed) && (dst.Uid != 0 || dst.Mode&0o022 != 0) {
		return markerState{ignored: fmt.Sprintf("%s is owned by uid %d with mode %04o; the agent makes it root's, writable by no one else, before it writes a marker",
			markerDir, dst.Uid, dst.Mode&0o7777)}, nil
	}
	return st, nil
}

// checkName refuses a volume name that is not one file name without a dot (a pod
// volume's name is a DNS label).
func checkName(volume string) error {
	if volume == "" || len(volume) > 63 || strings.ContainsAny(volume, "./\\\x00") {
		return fmt.Errorf("%q is not a volume name", volume)
	}
	return nil
}
