package repository

import (
	"io/fs"
	"os"
	"path/filepath"
)

// A filesystem store is written by two kinds of process that do not share a user:
// the manager (UID 65532 in config/default) creates repositories, expires snapshots
// and runs maintenance, and the agents (root) write backups into them. Both kopia and
// restic make their files readable by their owner only, so a repository the agents
// had written would be closed to the manager. Holdfast therefore shares each
// repository directory with a group, the manager's:
//
//   - the repository directory is setgid, so every file and directory created below
//     it, by any process, belongs to the group of the process that created the
//     repository, and new directories inherit the setgid bit;
//   - kopia is told to create files 0660 and directories 0770;
//   - restic follows the mode of its config file: when the group may read it, restic
//     creates data files 0440 and directories 0770 (restic makes data read-only);
//   - the holdfast process runs with umask 0007 (main.go), which keeps the group bits
//     of what kopia and restic create and still gives nothing to other users.
const (
	sharedDirMode  = fs.ModeSetgid | 0o770
	sharedFileMode = 0o660
	// resticConfigMode is the mode that makes restic create group-readable files.
	resticConfigMode = 0o440
)

// ProcessUmask is the umask the holdfast binary runs with (see the comment above).
const ProcessUmask = 0o007

// makeSharedDir creates dir (and its parents) and gives it sharedDirMode. MkdirAll
// cannot set the setgid bit and is subject to the umask, so a Chmod follows.
func makeSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o770); err != nil {
		return err
	}
	return os.Chmod(dir, sharedDirMode)
}

// shareResticRepository opens the restic repository at dir, just initialised by this
// process, to the group: restic init creates its directories 0700 and its config and
// key files 0400 before there is a config whose mode it could follow.
func shareResticRepository(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, sharedDirMode)
		}
		return os.Chmod(p, resticConfigMode)
	})
}
