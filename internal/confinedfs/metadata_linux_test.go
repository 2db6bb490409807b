package confinedfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The path for kernels before 6.6 (no fchmodat2), which this machine's kernel does
// not take by itself: it changes a file's mode and refuses a symlink.
func TestChmodWithoutFchmodat2(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	if err := chmodByDescriptor(dirfd, "f", 0o640); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "f")); st.Mode().Perm() != 0o640 {
		t.Errorf("f has mode %v, want 0640", st.Mode())
	}
	if err := chmodByDescriptor(dirfd, "link", 0o777); !errors.Is(err, ErrReplacedBySymlink) {
		t.Errorf("chmod of a symlink: %v, want ErrReplacedBySymlink", err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("the directory the link points to has mode %v, want 0700", st.Mode())
	}
}
