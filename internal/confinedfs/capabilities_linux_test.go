package confinedfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast-dev/holdfast/agent/jail"
	"github.com/holdfast-dev/holdfast/internal/confinedfs"
)

// TestRestoreWithTheMoversCapabilities restores, on a thread that keeps only the
// capabilities of the agent's data mover (jail.JobCapabilities), what needs more: a
// device node (CAP_MKNOD), a file capability (CAP_SETFCAP) and a trusted.* attribute
// (CAP_SYS_ADMIN) are counted, not fatal; user.* attributes and a POSIX ACL on a file
// owned by another user (CAP_FOWNER) are set. docs/agent.md ("What is preserved")
// rests on this.
func TestRestoreWithTheMoversCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	acl := "user::rw-\nuser:4321:r--\ngroup::r--\nmask::r--\nother::---\n"
	capability := string([]byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, h := range []*tar.Header{
		{Name: "tool", Typeflag: tar.TypeReg, Mode: 0o755, Uid: 4321, Gid: 4321, ModTime: mtime, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": capability, "SCHILY.xattr.trusted.x": "t", "SCHILY.xattr.user.x": "u",
			"SCHILY.acl.access": acl}},
		{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := confinedfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	type result struct {
		stats confinedfs.TarStats
		err   error
	}
	done := make(chan result)
	go func() {
		// The thread ends with the goroutine, never to run other code with fewer
		// capabilities.
		runtime.LockOSThread()
		if err := keepOnly(jail.JobCapabilities); err != nil {
			done <- result{err: err}
			return
		}
		stats, err := confinedfs.ExtractTar(context.Background(), w, &buf, confinedfs.TarOptions{})
		done <- result{stats, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := (confinedfs.TarStats{Files: 1, DevicesSkipped: 1, AttributesRefused: 2}); r.stats != want {
		t.Errorf("stats = %+v, want %+v", r.stats, want)
	}
	for _, attr := range []string{"user.x", "system.posix_acl_access"} {
		if _, err := unix.Lgetxattr(filepath.Join(dir, "tool"), attr, make([]byte, 256)); err != nil {
			t.Errorf("tool %s: %v", attr, err)
		}
	}
}

// keepOnly keeps the calling thread's capabilities in keep, as the jail does.
func keepOnly(keep []uintptr) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var want [2]unix.CapUserData
	for _, c := range keep {
		want[c/32].Permitted |= 1 << (c % 32)
		want[c/32].Effective |= 1 << (c % 32)
	}
	return unix.Capset(&hdr, &want[0])
}
