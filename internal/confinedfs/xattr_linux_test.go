package confinedfs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSetXattrsWithoutProc: the data mover's jail has no /proc, and attributes are
// still set there. The test runs on a thread of its own in a mount namespace of its
// own without /proc (root only).
func TestSetXattrsWithoutProc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a mount namespace")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	type result struct {
		refused int
		err     error
	}
	done := make(chan result)
	go func() {
		// The thread ends with the goroutine: it never runs other code in this namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- result{err: err}
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- result{err: err}
			return
		}
		if err := unix.Unmount("/proc", unix.MNT_DETACH); err != nil {
			done <- result{err: err}
			return
		}
		if _, err := os.Stat("/proc/self/fd"); !os.IsNotExist(err) {
			done <- result{err: err}
			return
		}
		n, err := w.SetXattrs("f", map[string]string{"user.a": "1"})
		m, err2 := w.SetXattrs("d", map[string]string{"user.b": "2"})
		if err == nil {
			err = err2
		}
		done <- result{refused: n + m, err: err}
	}()
	r := <-done
	if r.err != nil || r.refused != 0 {
		t.Fatalf("SetXattrs without /proc: %d refused, err %v", r.refused, r.err)
	}
	for name, want := range map[string]string{"f": "user.a", "d": "user.b"} {
		if n, err := unix.Lgetxattr(filepath.Join(dir, name), want, make([]byte, 8)); err != nil || n != 1 {
			t.Errorf("%s %s: %v", name, want, err)
		}
	}
}

// TestSetXattrsOfAbsentEntry: the attributes of an entry that is not in the target,
// missing or below a missing directory or a file, are ErrAbsent, none counted as
// refused; those of a present entry are set.
func TestSetXattrsOfAbsentEntry(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	attrs := map[string]string{"user.a": "1", "user.b": "2"}
	for _, name := range []string{"gone", "gone/f", "f/under-a-file"} {
		refused, err := w.SetXattrs(name, attrs)
		if !errors.Is(err, ErrAbsent) || refused != 0 {
			t.Errorf("SetXattrs(%q) = %d, %v; want 0, ErrAbsent", name, refused, err)
		}
	}
	refused, err := w.SetXattrs("f", attrs)
	if err != nil {
		t.Fatal(err)
	}
	if refused == len(attrs) {
		t.Skip("the file system keeps no user.* attributes")
	}
	if refused != 0 {
		t.Errorf("SetXattrs(f) refused %d, want 0", refused)
	}
}
