package repository

import (
	"bytes"
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
