package kopiarestore

import (
	"bufio"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"
	"time"
)

// kopia stores no FIFOs and no device nodes. Holdfast lists a volume's FIFOs and
// device nodes in one more file at the snapshot's root, SpecialName, one per line:
//
//	fifo|chardev|blockdev <mode, octal> <uid> <gid> <mtime, Unix ns> <major> <minor> <path>
//
// (the path relative to the volume, quoted as in the attributes file). Holdfast's
// restore reads it before the snapshot's entries and makes each entry when it makes
// its directory; the kopia CLI restores it as a file. Sockets are not listed: a
// socket is useless without the process that listens on it.

// SpecialName is the stored name of the special files' list at a snapshot's root.
const SpecialName = NamePrefix + "special"

// Special is a FIFO or device node of a volume.
type Special struct {
	// Path is relative to the volume.
	Path string
	// Mode holds the type (iofs.ModeNamedPipe, or iofs.ModeDevice with or without
	// iofs.ModeCharDevice) and the permission bits.
	Mode         iofs.FileMode
	UID, GID     int
	ModTime      time.Time
	Major, Minor uint32
}

// WriteSpecial appends s to w.
func WriteSpecial(w io.Writer, s Special) error {
	kind := "fifo"
	switch {
	case s.Mode&iofs.ModeCharDevice != 0:
		kind = "chardev"
	case s.Mode&iofs.ModeDevice != 0:
		kind = "blockdev"
	}
	perm := uint32(s.Mode.Perm())
	if s.Mode&iofs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if s.Mode&iofs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if s.Mode&iofs.ModeSticky != 0 {
		perm |= 0o1000
	}
	_, err := fmt.Fprintf(w, "%s %o %d %d %d %d %d %s\n", kind, perm, s.UID, s.GID, s.ModTime.UnixNano(), s.Major, s.Minor, quote(s.Path))
	return err
}

// ReadSpecial reads a list WriteSpecial wrote: the entries by their directory
// ("." for the volume's root).
func ReadSpecial(r io.Reader) (map[string][]Special, error) {
	out := map[string][]Special{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		fields := strings.SplitN(sc.Text(), " ", 8)
		if len(fields) != 8 {
			return nil, fmt.Errorf("line %d: not a special file", line)
		}
		var s Special
		var perm uint32
		var ns int64
		if _, err := fmt.Sscanf(strings.Join(fields[1:7], " "), "%o %d %d %d %d %d", &perm, &s.UID, &s.GID, &ns, &s.Major, &s.Minor); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		switch fields[0] {
		case "fifo":
			s.Mode = iofs.ModeNamedPipe
		case "chardev":
			s.Mode = iofs.ModeDevice | iofs.ModeCharDevice
		case "blockdev":
			s.Mode = iofs.ModeDevice
		default:
			return nil, fmt.Errorf("line %d: unknown kind %q", line, fields[0])
		}
		s.Mode |= iofs.FileMode(perm & 0o777)
		if perm&0o4000 != 0 {
			s.Mode |= iofs.ModeSetuid
		}
		if perm&0o2000 != 0 {
			s.Mode |= iofs.ModeSetgid
		}
		if perm&0o1000 != 0 {
			s.Mode |= iofs.ModeSticky
		}
		s.ModTime = time.Unix(0, ns)
		p, err := unquote(fields[7])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		s.Path = p
		dir := path.Dir(p)
		out[dir] = append(out[dir], s)
	}
	return out, sc.Err()
}
