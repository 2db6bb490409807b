package repository

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestFilesystemRepositoriesAreGroupShared: with the binary's umask, everything kopia
// and restic create in a filesystem repository, at initialisation and in a later
// backup (as the agent does), belongs to the repository directory's group and the group
// may read it, and every directory is setgid and open to the group, so that the
// manager (another user in that group) can expire and maintain what the agents wrote.
// The end-to-end suite runs the manager as UID 65532 against an agent running as root.
func TestFilesystemRepositoriesAreGroupShared(t *testing.T) {
	old := syscall.Umask(ProcessUmask)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			root := t.TempDir()
			cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: root}}, uploader, "shared")
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			src := t.TempDir()
			writeTree(t, src, map[string]string{"a/b": "some data", "c": "more data"})
			if _, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pod/web/cache"}); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			repoDir := filepath.Join(root, string(uploader), "shared")
			top, err := os.Stat(repoDir)
			if err != nil {
				t.Fatal(err)
			}
			gid := top.Sys().(*syscall.Stat_t).Gid
			files := 0
			err = filepath.WalkDir(repoDir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(root, p)
				if g := fi.Sys().(*syscall.Stat_t).Gid; g != gid {
					t.Errorf("%s: group %d, want the repository's %d", rel, g, gid)
				}
				mode := fi.Mode()
				switch {
				case d.IsDir():
					if mode&fs.ModeSetgid == 0 || mode.Perm()&0o070 != 0o070 || mode.Perm()&0o007 != 0 {
						t.Errorf("directory %s: mode %v, want setgid, group rwx, nothing for others", rel, mode)
					}
				default:
					files++
					if mode.Perm()&0o040 == 0 || mode.Perm()&0o007 != 0 {
						t.Errorf("file %s: mode %v, want group-readable, nothing for others", rel, mode)
					}
					if uploader == v1.UploaderKopia && mode.Perm()&0o020 == 0 {
						t.Errorf("kopia file %s: mode %v, want group-writable", rel, mode)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if files < 3 {
				t.Fatalf("only %d files in %s", files, repoDir)
			}
		})
	}
}
