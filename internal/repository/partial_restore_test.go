package repository

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/confinedfs"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// snapshotOf backs up files with r and returns the snapshot.
func snapshotOf(t *testing.T, r Repository, files map[string]string) string {
	t.Helper()
	src := t.TempDir()
	writeTree(t, src, files)
	res, err := r.Backup(ctxFor(t), BackupRequest{Dir: src, SourcePath: "/pvc/partial"})
	if err != nil {
		t.Fatal(err)
	}
	return res.SnapshotID
}

// absent fails the test if any of names exists below dir.
func absent(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (err %v); the restore must not have written it", n, err)
		}
	}
}

var partialSnapshot = map[string]string{
	"keep/a.txt":     "a as backed up",
	"keep/sub/b.txt": "b as backed up",
	"docs/one.txt":   "one as backed up",
	"docs/two.txt":   "two as backed up",
	"top.txt":        "top as backed up",
	"other/x.txt":    "x as backed up",
}

// TestPartialRestore: with paths, a restore gives back one directory (with everything
// below it) and one file, at their own places, into a live volume whose other files,
// changed since the backup, stay as they are; with both uploaders.
func TestPartialRestore(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			r := filesystemRepository(t, uploader)
			id := snapshotOf(t, r, partialSnapshot)
			live := t.TempDir()
			// The live volume: keep/ was deleted, the other files changed.
			writeTree(t, live, map[string]string{"docs/one.txt": "one changed", "docs/two.txt": "two changed",
				"other/x.txt": "x changed", "extra.txt": "written after the backup"})

			res, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, Paths: []string{"keep", "docs/two.txt"}})
			if err != nil {
				t.Fatalf("partial restore: %v", err)
			}
			checkTree(t, live, map[string]string{
				"keep/a.txt": "a as backed up", "keep/sub/b.txt": "b as backed up", "docs/two.txt": "two as backed up",
				// untouched:
				"docs/one.txt": "one changed", "other/x.txt": "x changed", "extra.txt": "written after the backup"})
			absent(t, live, "top.txt")
			if res.TotalFiles != 3 {
				t.Errorf("restored %d files, want 3", res.TotalFiles)
			}
		})
	}
}

// TestPartialRestoreOfAMissingPath: a path the snapshot does not hold fails the restore
// with one sentence that names it, and nothing is written.
func TestPartialRestoreOfAMissingPath(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			r := filesystemRepository(t, uploader)
			id := snapshotOf(t, r, partialSnapshot)
			for _, missing := range []string{"keep/nope.txt", "top.txt/below", "nothing"} {
				live := t.TempDir()
				_, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, Paths: []string{"docs", missing}})
				var notIn *kopiarestore.PathNotInSnapshotError
				if !errors.As(err, &notIn) || notIn.Path != missing {
					t.Fatalf("restore of %q: err = %v, want a PathNotInSnapshotError naming it", missing, err)
				}
				if want := `path "` + missing + `" is not in snapshot ` + id; !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not say %q", err, want)
				}
				absent(t, live, "docs")
			}
		})
	}
}

// TestRedirectedRestore: with a sub-path, the snapshot (or its paths) comes back below
// that directory, made if missing; a symlink planted at the sub-path is replaced, one
// planted above it that leads out of the volume fails the restore, and nothing is
// written outside the volume.
func TestRedirectedRestore(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			r := filesystemRepository(t, uploader)
			id := snapshotOf(t, r, partialSnapshot)

			live := t.TempDir()
			writeTree(t, live, map[string]string{"keep/a.txt": "live a"})
			if _, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, SubPath: "restored/today", Paths: []string{"keep"}}); err != nil {
				t.Fatalf("restore into a sub-path: %v", err)
			}
			checkTree(t, live, map[string]string{"keep/a.txt": "live a",
				"restored/today/keep/a.txt": "a as backed up", "restored/today/keep/sub/b.txt": "b as backed up"})
			absent(t, live, "restored/today/docs", "restored/keep")

			if _, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, SubPath: "whole"}); err != nil {
				t.Fatalf("restore of a whole snapshot into a sub-path: %v", err)
			}
			whole := map[string]string{}
			for name, content := range partialSnapshot {
				whole["whole/"+name] = content
			}
			checkTree(t, live, whole)

			// A symlink at the sub-path: replaced by the directory, never followed.
			outside := t.TempDir()
			if err := os.Symlink(outside, filepath.Join(live, "planted")); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, SubPath: "planted", Paths: []string{"docs"}}); err != nil {
				t.Fatalf("restore into a sub-path where a symlink was: %v", err)
			}
			checkTree(t, live, map[string]string{"planted/docs/one.txt": "one as backed up"})
			// A symlink above the sub-path that leads out: the restore fails.
			if err := os.Symlink(outside, filepath.Join(live, "parent")); err != nil {
				t.Fatal(err)
			}
			_, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: id, TargetDir: live, SubPath: "parent/inside", Paths: []string{"docs"}})
			if !errors.Is(err, confinedfs.ErrEscape) {
				t.Errorf("restore below a symlink that leads out of the volume: err = %v, want ErrEscape", err)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("the restore wrote %d entries outside the volume, through a symlink", len(entries))
			}
		})
	}
}

// TestPartialRestoreOfASymlink: a symlink named on its own comes back with its
// target (restic ls, which the restic partial restore lists with, prints none).
func TestPartialRestoreOfASymlink(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			writeTree(t, src, map[string]string{"docs/one.txt": "one"})
			if err := os.Symlink("one.txt", filepath.Join(src, "docs", "latest")); err != nil {
				t.Fatal(err)
			}
			res, err := r.Backup(ctxFor(t), BackupRequest{Dir: src, SourcePath: "/pvc/partial"})
			if err != nil {
				t.Fatal(err)
			}
			live := t.TempDir()
			if _, err := r.Restore(ctxFor(t), RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: live, Paths: []string{"docs/latest"}}); err != nil {
				t.Fatalf("partial restore of a symlink: %v", err)
			}
			if target, err := os.Readlink(filepath.Join(live, "docs", "latest")); err != nil || target != "one.txt" {
				t.Errorf("restored symlink: target %q, err %v; want one.txt", target, err)
			}
		})
	}
}
