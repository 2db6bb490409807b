package repository

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// filesystemRepository initialises a repository of uploader in a temporary directory
// and opens it.
func filesystemRepository(t *testing.T, uploader v1.Uploader) Repository {
	t.Helper()
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, uploader, "live")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// TestKopiaBackupSkipsEntriesThatChangeWhileRead: a file deleted, or replaced by a
// FIFO, a symlink or a directory, between the listing of its directory and its
// reading is left out of the snapshot and counted; the backup completes with the rest.
func TestKopiaBackupSkipsEntriesThatChangeWhileRead(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	files := map[string]string{"keep.txt": "kept", "dir/keep.txt": "kept too",
		"gone.txt": "deleted", "dir/fifo.txt": "now a FIFO", "link.txt": "now a symlink", "dir.txt": "now a directory"}
	writeTree(t, src, files)
	secret := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(secret, []byte("not in the volume"), 0o600); err != nil {
		t.Fatal(err)
	}
	change := map[string]func(p string) error{
		"gone.txt":     os.Remove,
		"dir/fifo.txt": func(p string) error { return replace(p, func() error { return syscall.Mkfifo(p, 0o600) }) },
		"link.txt":     func(p string) error { return replace(p, func() error { return os.Symlink(secret, p) }) },
		"dir.txt":      func(p string) error { return replace(p, func() error { return os.Mkdir(p, 0o700) }) },
	}
	var mu sync.Mutex
	beforeOpen = func(path string) {
		rel, _ := filepath.Rel(src, path)
		mu.Lock()
		defer mu.Unlock()
		if f, ok := change[rel]; ok {
			delete(change, rel)
			if err := f(path); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { beforeOpen = nil })

	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/live"})
	if err != nil {
		t.Fatalf("backup of a volume that changed while read: %v", err)
	}
	// kopia's estimate of the upload, a second listing of the tree concurrent with it,
	// could find dir/fifo.txt already a FIFO and count it as one too; the estimate is
	// off now (kopiaProgress.Enabled), and at most one FIFO is still allowed.
	got := res.Skipped
	got.FIFOs = 0
	if want := (Skipped{Vanished: 1, ChangedType: 3}); got != want || res.Skipped.FIFOs > 1 {
		t.Errorf("skipped %+v, want %+v (and at most one FIFO)", res.Skipped, want)
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, target, map[string]string{"keep.txt": "kept", "dir/keep.txt": "kept too"})
	for _, name := range []string{"gone.txt", "dir/fifo.txt", "link.txt", "dir.txt"} {
		if _, err := os.Lstat(filepath.Join(target, name)); !os.IsNotExist(err) {
			t.Errorf("restored %s (err %v), want it left out of the snapshot", name, err)
		}
	}
}

func replace(p string, create func() error) error {
	if err := os.Remove(p); err != nil {
		return err
	}
	return create()
}

// TestKopiaBackupIgnoresInVolumeIgnoreFiles: what is backed up is Holdfast's policy,
// not the volume's: a .kopiaignore that excludes everything and a CACHEDIR.TAG change
// nothing unless the backup asks to exclude caches, on either uploader.
func TestKopiaBackupIgnoresInVolumeIgnoreFiles(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			files := map[string]string{
				".kopiaignore": "*\n", "data.db": "rows", "sub/.kopiaignore": "*.log\n", "sub/app.log": "lines",
				"cache/CACHEDIR.TAG": cacheDirSignature + "\n", "cache/blob": "cached",
			}
			writeTree(t, src, files)
			res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/ignore"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Skipped != (Skipped{}) {
				t.Errorf("skipped %+v, want nothing", res.Skipped)
			}
			target := t.TempDir()
			if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
				t.Fatal(err)
			}
			checkTree(t, target, files)
		})
	}
}

// TestBackupExcludesCacheDirectories: with ExcludeCaches, both uploaders leave out the
// contents of each directory tagged with a CACHEDIR.TAG that begins with the
// signature, keep the directory and its tag, and count the directory; a tag with
// another or a too short content, a tag that is a symlink and a FIFO named like a tag
// (which would block restic's own --exclude-caches for ever) exclude nothing. Names
// that are restic pattern syntax ('*', '[x]', '$HOME', '\\') are matched literally:
// their untagged look-alikes are backed up.
func TestBackupExcludesCacheDirectories(t *testing.T) {
	tag := cacheDirSignature + "\n# This file is a cache directory tag.\n"
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			kept := map[string]string{
				"data.txt": "data",
				// Tagged: only the tag is kept.
				"cache/CACHEDIR.TAG": tag, "c*/CACHEDIR.TAG": tag, "d[x]/CACHEDIR.TAG": tag,
				"e$HOME/CACHEDIR.TAG": tag, "f\\g/CACHEDIR.TAG": tag,
				// Look-alikes of the tagged names, untagged.
				"cx/blob": "kept", "dx/blob": "kept", "fg/blob": "kept", "e/blob": "kept",
				// Tags that mark nothing.
				"wrong/CACHEDIR.TAG": "Signature: 00000000000000000000000000000000\n", "wrong/blob": "kept",
				"short/CACHEDIR.TAG": "Signature: 8a477f597d28d172789f", "short/blob": "kept",
				"link/blob": "kept", "fifo/blob": "kept",
			}
			left := map[string]string{
				"cache/blob": "cached", "cache/.hidden": "cached", "cache/sub/deep": "cached",
				"cache/sub/CACHEDIR.TAG": tag, "c*/blob": "cached", "d[x]/blob": "cached",
				"e$HOME/blob": "cached", "f\\g/blob": "cached",
			}
			writeTree(t, src, kept)
			writeTree(t, src, left)
			outside := filepath.Join(t.TempDir(), "CACHEDIR.TAG")
			if err := os.WriteFile(outside, []byte(tag), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(src, "link", "CACHEDIR.TAG")); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(filepath.Join(src, "fifo", "CACHEDIR.TAG"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Nor is what kopia keeps beside the snapshot's files (here the list of
			// FIFOs) of what a cache directory holds.
			if err := syscall.Mkfifo(filepath.Join(src, "cache", "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
			left["cache/pipe"] = ""
			res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/caches", ExcludeCaches: true})
			if err != nil {
				t.Fatal(err)
			}
			if want := (Skipped{CacheDirectories: 5}); res.Skipped != want {
				t.Errorf("skipped %+v, want %+v", res.Skipped, want)
			}
			target := t.TempDir()
			if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
				t.Fatal(err)
			}
			checkTree(t, target, kept)
			for name := range left {
				if _, err := os.Lstat(filepath.Join(target, name)); !os.IsNotExist(err) {
					t.Errorf("restored %s (err %v), want it left out with its cache directory", name, err)
				}
			}
			if st, err := os.Lstat(filepath.Join(target, "link", "CACHEDIR.TAG")); err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Errorf("link/CACHEDIR.TAG restored as %v (err %v), want the symlink", st, err)
			}
			if st, err := os.Lstat(filepath.Join(target, "fifo", "CACHEDIR.TAG")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
				t.Errorf("fifo/CACHEDIR.TAG restored as %v (err %v), want the FIFO", st, err)
			}
		})
	}
}

// TestBackupCountsSocketsAndKeepsFIFOs: a socket is not backed up and is counted as
// skipped by both uploaders; a FIFO is kept (kopia: in Holdfast's list of special
// files) and comes back as a FIFO.
func TestBackupCountsSocketsAndKeepsFIFOs(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			writeTree(t, src, map[string]string{"a.txt": "a"})
			if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("unix", filepath.Join(src, "sock"))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/special"})
			if err != nil {
				t.Fatal(err)
			}
			if want := (Skipped{Sockets: 1}); res.Skipped != want {
				t.Errorf("skipped %+v, want %+v", res.Skipped, want)
			}
			target := t.TempDir()
			if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Lstat(filepath.Join(target, "fifo")); err != nil {
				t.Errorf("fifo not restored: %v", err)
			} else if st.Mode() != os.ModeNamedPipe|0o644 {
				t.Errorf("fifo restored as %v, want a FIFO, mode 0644", st.Mode())
			}
		})
	}
}

// TestBackupOfABusyVolume backs up a volume in which files and directories are created
// and deleted throughout: every backup completes, and backups are repeated until one
// saw an entry vanish (a churn that never overlaps a backup's reading proves nothing).
func TestBackupOfABusyVolume(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			writeTree(t, src, map[string]string{"stable/a.txt": "a", "stable/b.txt": "b"})
			// Each attempt takes a fraction of a second; on a loaded machine a backup
			// can read everything between two steps of the churn, so try until one
			// overlaps, within a bound that only a churn that never overlaps reaches.
			const attempts = 200
			next := 0
			for i := range attempts {
				res, err := backupWhileChurning(ctx, r, src, &next)
				if err != nil {
					t.Fatalf("backup %d of a busy volume: %v", i+1, err)
				}
				if res.Skipped.Vanished > 0 {
					t.Logf("backup %d: %d files, skipped %+v", i+1, res.TotalFiles, res.Skipped)
					return
				}
			}
			t.Fatalf("no backup in %d saw a file vanish: the churn does not overlap the backup", attempts)
		})
	}
}

// backupWhileChurning backs src up while a goroutine creates and deletes files and
// directories in it, until the backup returns.
func backupWhileChurning(ctx context.Context, r Repository, src string, next *int) (BackupResult, error) {
	done := make(chan struct{})
	started := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		churned <- churn(src, next, started, done)
	}()
	select {
	case <-started:
	case err := <-churned:
		return BackupResult{}, fmt.Errorf("churning the volume: %w", err)
	}
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/busy"})
	close(done)
	if cerr := <-churned; cerr != nil && err == nil {
		err = fmt.Errorf("churning the volume: %w", cerr)
	}
	return res, err
}

// churn keeps a window of files and small directories alive, creating one and deleting
// the oldest over and over, until done is closed; *next is the next one to create.
// started is closed once the churn deletes files.
func churn(dir string, next *int, started chan<- struct{}, done <-chan struct{}) error {
	const window = 128
	first := *next
	defer func() {
		if *next < first+window {
			close(started)
		}
	}()
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("tmp-%09d", i)) }
	for ; ; *next++ {
		i := *next
		select {
		case <-done:
			return nil
		default:
		}
		p := name(i)
		if i%8 == 0 {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(p, "wal"), []byte("segment"), 0o644); err != nil {
				return err
			}
		} else if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			return err
		}
		if i == first+window {
			close(started)
		}
		if i >= window {
			if err := os.RemoveAll(name(i - window)); err != nil {
				return err
			}
		}
	}
}

// setXattr sets user.note on p, or skips the test where the file system keeps none.
func setXattr(t *testing.T, p string) {
	t.Helper()
	if err := unix.Lsetxattr(p, "user.note", []byte("noted"), 0); err != nil {
		t.Skipf("the file system keeps no user.* attributes: %v", err)
	}
}

// changeAfterMetadata runs change once the backup of a kopia repository has read the
// volume's attributes, special files and links, before its upload.
func changeAfterMetadata(t *testing.T, change func(dir string) error) {
	afterMetadata = func(dir string) {
		if err := change(dir); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { afterMetadata = nil })
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Lstat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Lstat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

// TestKopiaRestoreLinksOnlyNamesOfOneContent: an application that replaces one name of
// a hard-linked file (a new file renamed over it) after the backup listed the file's
// names leaves a snapshot whose names of one link group hold different contents. The
// restore gives each name its own content, and links only the names that still share
// theirs; a listed name the snapshot lacks is passed over.
func TestKopiaRestoreLinksOnlyNamesOfOneContent(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "shared", "x": "lonely"})
	for _, l := range [][2]string{{"a", "b"}, {"a", "c"}, {"x", "y"}} {
		if err := os.Link(filepath.Join(src, l[0]), filepath.Join(src, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	changeAfterMetadata(t, func(dir string) error {
		tmp := filepath.Join(dir, "a.tmp")
		if err := os.WriteFile(tmp, []byte("rewritten"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, "a")); err != nil {
			return err
		}
		return os.Remove(filepath.Join(dir, "y"))
	})
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/relinked"})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	restored, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
	if err != nil {
		t.Fatalf("restore of a snapshot whose link group was broken meanwhile: %v", err)
	}
	checkTree(t, target, map[string]string{"a": "rewritten", "b": "shared", "c": "shared", "x": "lonely"})
	if sameFile(t, filepath.Join(target, "a"), filepath.Join(target, "b")) {
		t.Error("a restored as a hard link of b, whose content the snapshot holds apart")
	}
	if !sameFile(t, filepath.Join(target, "b"), filepath.Join(target, "c")) {
		t.Error("b and c restored apart, want them hard links of one file")
	}
	if _, err := os.Lstat(filepath.Join(target, "y")); !os.IsNotExist(err) {
		t.Errorf("restored y (err %v), which the snapshot does not hold", err)
	}
	if restored.NotRestored != (NotRestored{}) {
		t.Errorf("not restored %+v, want nothing", restored.NotRestored)
	}
}

// TestKopiaRestorePassesOverEntriesDeletedAfterTheirMetadata: entries with extended
// attributes, and FIFOs, deleted or replaced after the backup read them and before its
// upload are listed in the snapshot's attributes and special files but not in its
// tree. The restore passes over what the tree lacks, without failing or counting the
// attributes as refused, and the tree wins where it holds another kind of entry.
func TestKopiaRestorePassesOverEntriesDeletedAfterTheirMetadata(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"keep.txt": "kept", "gone/file": "deleted", "fifos/keep.txt": "kept too", "lost.txt": "deleted"})
	for _, p := range []string{"keep.txt", "gone", "gone/file", "lost.txt"} {
		setXattr(t, filepath.Join(src, p))
	}
	for _, p := range []string{"gone/fifo", "fifos/file", "fifos/dir"} {
		if err := syscall.Mkfifo(filepath.Join(src, p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	changeAfterMetadata(t, func(dir string) error {
		for _, p := range []string{"gone", "lost.txt"} {
			if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
				return err
			}
		}
		if err := replace(filepath.Join(dir, "fifos/file"), func() error {
			return os.WriteFile(filepath.Join(dir, "fifos/file"), []byte("now a file"), 0o600)
		}); err != nil {
			return err
		}
		return replace(filepath.Join(dir, "fifos/dir"), func() error {
			return os.Mkdir(filepath.Join(dir, "fifos/dir"), 0o700)
		})
	})
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/deleted"})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	restored, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
	if err != nil {
		t.Fatalf("restore of a snapshot whose attributes name deleted entries: %v", err)
	}
	checkTree(t, target, map[string]string{"keep.txt": "kept", "fifos/keep.txt": "kept too", "fifos/file": "now a file"})
	if st, err := os.Lstat(filepath.Join(target, "fifos/dir")); err != nil || !st.IsDir() {
		t.Errorf("fifos/dir restored as %v (err %v), want the directory the snapshot holds", st, err)
	}
	for _, p := range []string{"gone", "lost.txt"} {
		if _, err := os.Lstat(filepath.Join(target, p)); !os.IsNotExist(err) {
			t.Errorf("restored %s (err %v), which the snapshot does not hold", p, err)
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(target, "keep.txt"), "user.note", buf); err != nil || string(buf[:n]) != "noted" {
		t.Errorf("keep.txt's user.note = %q (err %v), want \"noted\"", buf[:max(n, 0)], err)
	}
	if restored.NotRestored != (NotRestored{}) {
		t.Errorf("not restored %+v, want nothing", restored.NotRestored)
	}
}
