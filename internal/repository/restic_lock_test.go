package repository

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestResticRestoreWaitsOutAnExclusiveLock: a restore that meets the repository locked
// by another restic process (the manager's prune, say) waits for the lock and then
// restores every file. restic announces the wait on stdout unless told to be quiet,
// and stdout is the snapshot's tar stream, so the announcement must not reach it.
//
// The lock is held by "restic key passwd", which locks the repository exclusively and
// then reads the new password from stdin; it lets go when stdin closes. inotify on the
// locks directory tells, without sleeping, when that lock is in place and when the
// restore's restic has read it (and so is about to wait).
func TestResticRestoreWaitsOutAnExclusiveLock(t *testing.T) {
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, v1.UploaderRestic, "locked")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	repo, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	files := map[string]string{"orders.db": "42 orders", "logs/today.txt": "quiet day"}
	src := t.TempDir()
	writeTree(t, src, files)
	snap, err := repo.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/orders"})
	if err != nil {
		t.Fatal(err)
	}
	r := repo.(*resticRepository)
	locks := newDirWatch(t, filepath.Join(r.repository(), "locks"))

	holder := exec.Command(r.binary, "key", "passwd")
	holder.Env, holder.Dir = r.environment(), r.dir
	var holderOut bytes.Buffer
	holder.Stdout, holder.Stderr = &holderOut, &holderOut
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = stdin.Close()
			_ = holder.Wait()
		}
	}
	defer release()
	held := locks.next(t, unix.IN_MOVED_TO, "")
	t.Logf("restic key passwd holds lock %s", held)

	target := t.TempDir()
	restored := make(chan error, 1)
	go func() {
		_, err := repo.Restore(ctx, RestoreRequest{SnapshotID: snap.SnapshotID, TargetDir: target})
		restored <- err
	}()
	locks.next(t, unix.IN_CLOSE_NOWRITE, held)
	release()
	if err := <-restored; err != nil {
		t.Fatalf("restore after waiting for the lock: %v (lock holder said %q)", err, holderOut.String())
	}
	checkTree(t, target, files)
}

// dirWatch reports what happens to the files of one directory, through inotify.
type dirWatch struct {
	fd  int
	buf []byte
	got []byte // unread events
}

func newDirWatch(t *testing.T, dir string) *dirWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_NOWRITE); err != nil {
		t.Fatal(err)
	}
	return &dirWatch{fd: fd, buf: make([]byte, 64<<10)}
}

// next blocks until a file of the directory sees an event in mask, and returns its
// name. With name set, only events on that file count. Temporary files (restic
// writes a lock as "<id>-tmp-..." and renames it) never count.
func (w *dirWatch) next(t *testing.T, mask uint32, name string) string {
	t.Helper()
	for {
		for len(w.got) >= unix.SizeofInotifyEvent {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.got[0]))
			end := unix.SizeofInotifyEvent + int(ev.Len)
			file := strings.TrimRight(string(w.got[unix.SizeofInotifyEvent:end]), "\x00")
			w.got = w.got[end:]
			if ev.Mask&mask != 0 && !strings.Contains(file, "-tmp-") && (name == "" || file == name) {
				return file
			}
		}
		// A bound on the wait, so that a test gone wrong fails instead of hanging.
		ready, err := unix.Poll([]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}, int(time.Minute/time.Millisecond))
		if err == nil && ready == 0 {
			t.Fatalf("no inotify event for %q within a minute", name)
		}
		if err != nil && err != unix.EINTR {
			t.Fatalf("waiting for inotify events: %v", err)
		}
		if ready == 0 {
			continue
		}
		n, err := unix.Read(w.fd, w.buf)
		if err != nil {
			t.Fatalf("reading inotify events: %v", err)
		}
		w.got = append(w.got, w.buf[:n]...)
	}
}

// lockHolder is a restic process that holds the repository's lock until released.
type lockHolder struct {
	cmd      *exec.Cmd
	out      bytes.Buffer
	stdin    io.WriteCloser
	lock     string // the lock file's name
	released bool
}

// holdLock starts restic with args, a command that locks the repository and then
// reads stdin ("key passwd" locks it exclusively, as prune does; "backup --stdin"
// shares the lock, as a long backup does), and returns once its lock is in place.
func holdLock(t *testing.T, r *resticRepository, locks *dirWatch, args ...string) *lockHolder {
	t.Helper()
	h := &lockHolder{cmd: exec.Command(r.binary, args...)}
	h.cmd.Env, h.cmd.Dir = r.environment(), r.dir
	h.cmd.Stdout, h.cmd.Stderr = &h.out, &h.out
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.release)
	h.lock = locks.next(t, unix.IN_MOVED_TO, "")
	return h
}

// release lets the process finish, which removes its lock.
func (h *lockHolder) release() {
	if !h.released {
		h.released = true
		_ = h.stdin.Close()
		_ = h.cmd.Wait()
	}
}

// kill ends the process the way the OOM killer does: its lock stays behind.
func (h *lockHolder) kill(t *testing.T) {
	t.Helper()
	h.released = true
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
}

func lockedRestic(t *testing.T) (*resticRepository, *dirWatch) {
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, v1.UploaderRestic, "locked")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	repo, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close(ctx) })
	r := repo.(*resticRepository)
	// Short waits: what is tested is what happens when the wait runs out.
	r.dataLockWait, r.adminLockWait = time.Second, time.Second
	return r, newDirWatch(t, filepath.Join(r.repository(), "locks"))
}

// TestResticMaintenanceIsDeferredByALongBackup (review M11): a prune that meets a
// backup still running ends with ErrLocked (the manager defers it and tries again
// soon), leaves the backup's live lock alone, and succeeds once the backup is done.
func TestResticMaintenanceIsDeferredByALongBackup(t *testing.T) {
	ctx := ctxFor(t)
	r, locks := lockedRestic(t)
	backup := holdLock(t, r, locks, "backup", "--stdin", "--stdin-filename", "big.bin", "--host", SnapshotHost)
	_, err := r.Maintain(ctx, MaintenanceRequest{Mode: MaintenancePrune})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("prune during a backup: %v, want ErrLocked", err)
	}
	if _, err := os.Stat(filepath.Join(r.repository(), "locks", backup.lock)); err != nil {
		t.Fatalf("the running backup's lock was removed: %v", err)
	}
	if _, err := io.WriteString(backup.stdin, "the volume's data"); err != nil {
		t.Fatal(err)
	}
	backup.release()
	if code := backup.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the backup holding the lock failed (%d): %s", code, backup.out.String())
	}
	if _, err := r.Maintain(ctx, MaintenanceRequest{Mode: MaintenancePrune}); err != nil {
		t.Fatalf("prune after the backup: %v", err)
	}
}

// TestResticBackupMeetsALongPrune (review M11): a backup that meets the repository
// locked exclusively for longer than it waits ends with ErrLocked, which the agent
// turns into "Pending, try again" rather than a failed backup.
func TestResticBackupMeetsALongPrune(t *testing.T) {
	ctx := ctxFor(t)
	r, locks := lockedRestic(t)
	holdLock(t, r, locks, "key", "passwd")
	src := t.TempDir()
	writeTree(t, src, map[string]string{"orders.db": "42 orders"})
	_, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/orders"})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("backup during an exclusive lock: %v, want ErrLocked", err)
	}
}

// TestResticMaintenanceRemovesAKilledMoversLock (review M11): a backup killed mid-way
// leaves its lock behind; maintenance removes such a stale lock and prunes, instead
// of failing until restic's 30 minutes are up.
func TestResticMaintenanceRemovesAKilledMoversLock(t *testing.T) {
	ctx := ctxFor(t)
	r, locks := lockedRestic(t)
	backup := holdLock(t, r, locks, "backup", "--stdin", "--stdin-filename", "big.bin", "--host", SnapshotHost)
	backup.kill(t)
	if _, err := os.Stat(filepath.Join(r.repository(), "locks", backup.lock)); err != nil {
		t.Fatalf("the killed backup's lock is not there: %v", err)
	}
	if _, err := r.Maintain(ctx, MaintenanceRequest{Mode: MaintenancePrune}); err != nil {
		t.Fatalf("prune after a killed backup: %v", err)
	}
}
