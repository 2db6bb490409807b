package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// writeFiles writes files (name: content) below dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// subTree is the part of tree at or below one of prefixes, or, with keep false, the rest.
func subTree(tree map[string]entry, keep bool, prefixes ...string) map[string]entry {
	out := map[string]entry{}
	for name, e := range tree {
		under := false
		for _, p := range prefixes {
			if name == p || strings.HasPrefix(name, p+"/") {
				under = true
			}
		}
		if under == keep {
			out[name] = e
		}
	}
	return out
}

// TestPartialRestoreIntoARunningVolume: a PodVolumeRestore with spec.paths gives back
// one directory (with everything below it) and one file of the snapshot, with both
// uploaders, into a live volume whose other files changed after the backup: those stay
// as they are, byte for byte; a path the snapshot does not hold fails the restore with
// a sentence naming it.
func TestPartialRestoreIntoARunningVolume(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "fs", uploader)
			vol := newVolume(t, ns, "app-1")
			writeFiles(t, vol.dir, map[string]string{
				"db/tables/users.dat": strings.Repeat("users ", 10000), "db/tables/orders.dat": "orders",
				"db/index/users.idx": "index", "config/app.yaml": "replicas: 3\n", "config/other.yaml": "other\n",
				"logs/app.log": "log line\n"})
			backedUp := snapshotTree(t, vol.dir)
			pvb := waitBackupPhase(t, createBackup(t, vol, "backup", "fs", repo, uploader), v1.RunCompleted, v1.RunFailed)
			if pvb.Status.Phase != v1.RunCompleted {
				t.Fatalf("backup %s: %s", pvb.Status.Phase, pvb.Status.Message)
			}

			// After the backup: a directory is deleted, a file broken, others changed
			// on purpose, one added.
			if err := os.RemoveAll(filepath.Join(vol.dir, "db/tables")); err != nil {
				t.Fatal(err)
			}
			writeFiles(t, vol.dir, map[string]string{"config/app.yaml": "broken", "config/other.yaml": "changed since\n",
				"logs/app.log": "log line\nanother\n", "db/index/users.idx": "index, newer", "new.txt": "new"})
			live := snapshotTree(t, vol.dir)

			pvr, _ := createRestore(t, vol, "partial", pvb.Status.SnapshotID, "fs", repo, uploader,
				func(s *v1.PodVolumeRestoreSpec) { s.Paths = []v1.RestorePath{"db/tables", "config/app.yaml"} })
			done := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed)
			if done.Status.Phase != v1.RunCompleted {
				t.Fatalf("partial restore %s: %s", done.Status.Phase, done.Status.Message)
			}
			after := snapshotTree(t, vol.dir)
			compareTrees(t, subTree(backedUp, true, "db/tables", "config/app.yaml"), subTree(after, true, "db/tables", "config/app.yaml"))
			// Everything else is as it was before the restore (the directories above the
			// paths take the snapshot's mode and times, so only their files are compared).
			untouched := func(tree map[string]entry) map[string]entry {
				rest := subTree(tree, false, "db/tables", "config/app.yaml")
				delete(rest, "db")
				delete(rest, "config")
				return rest
			}
			compareTrees(t, untouched(live), untouched(after))
			if done.Status.Progress.FilesDone != 3 {
				t.Errorf("progress %+v: want the 3 files of the paths", done.Status.Progress)
			}

			missing, _ := createRestore(t, vol, "missing", pvb.Status.SnapshotID, "fs", repo, uploader,
				func(s *v1.PodVolumeRestoreSpec) { s.Paths = []v1.RestorePath{"config", "db/nothing"} })
			failed := waitRestorePhase(t, missing, v1.RunCompleted, v1.RunFailed)
			want := `path "db/nothing" is not in snapshot ` + pvb.Status.SnapshotID
			if failed.Status.Phase != v1.RunFailed || !strings.Contains(failed.Status.Message, want) {
				t.Errorf("restore of a path the snapshot lacks: %s %q, want Failed saying %q", failed.Status.Phase, failed.Status.Message, want)
			}
			compareTrees(t, after, snapshotTree(t, vol.dir))
		})
	}
}

// TestRedirectedRestoreStaysBelowItsSubPath: a PodVolumeRestore with spec.subPath
// writes the snapshot below that directory; a symlink planted at a parent of the
// sub-path that leads out of the volume fails the restore, and nothing is written
// outside the volume.
func TestRedirectedRestoreStaysBelowItsSubPath(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	vol := newVolume(t, ns, "app-1")
	writeFiles(t, vol.dir, map[string]string{"db/users.dat": "users", "config/app.yaml": "replicas: 3\n"})
	backedUp := snapshotTree(t, vol.dir)
	pvb := waitBackupPhase(t, createBackup(t, vol, "backup", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed)
	if pvb.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup %s: %s", pvb.Status.Phase, pvb.Status.Message)
	}
	writeFiles(t, vol.dir, map[string]string{"config/app.yaml": "live"})

	pvr, _ := createRestore(t, vol, "aside", pvb.Status.SnapshotID, "fs", repo, v1.UploaderKopia,
		func(s *v1.PodVolumeRestoreSpec) { s.SubPath = "restored/yesterday" })
	if done := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed); done.Status.Phase != v1.RunCompleted {
		t.Fatalf("redirected restore %s: %s", done.Status.Phase, done.Status.Message)
	}
	compareTrees(t, backedUp, subTree(snapshotTree(t, filepath.Join(vol.dir, "restored/yesterday")), true, "db", "config"))
	if b, _ := os.ReadFile(filepath.Join(vol.dir, "config/app.yaml")); string(b) != "live" {
		t.Errorf("config/app.yaml = %q: a redirected restore must not touch the volume's root", b)
	}

	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(vol.dir, "planted")); err != nil {
		t.Fatal(err)
	}
	escape, _ := createRestore(t, vol, "escape", pvb.Status.SnapshotID, "fs", repo, v1.UploaderKopia,
		func(s *v1.PodVolumeRestoreSpec) { s.SubPath = "planted/inside" })
	failed := waitRestorePhase(t, escape, v1.RunCompleted, v1.RunFailed)
	if failed.Status.Phase != v1.RunFailed || !strings.Contains(failed.Status.Message, "outside the volume") {
		t.Errorf("restore below a symlink that leads out: %s %q, want Failed saying it resolves outside the volume", failed.Status.Phase, failed.Status.Message)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the restore wrote %d entries outside the volume, through the planted symlink", len(entries))
	}
}
