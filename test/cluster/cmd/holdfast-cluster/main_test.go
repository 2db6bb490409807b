package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestDaemonsDoNotInheritALock: a descriptor this process inherited without
// close-on-exec (as flock(1) passes its lock) does not reach the processes it starts.
func TestDaemonsDoNotInheritALock(t *testing.T) {
	fd, err := syscall.Open(filepath.Join(t.TempDir(), "lock"), syscall.O_CREAT|syscall.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	childHas := func() bool {
		out, err := exec.Command("ls", "/proc/self/fd").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(out)) {
			if f == strconv.Itoa(fd) {
				return true
			}
		}
		return false
	}
	if !childHas() {
		t.Fatalf("descriptor %d without close-on-exec did not reach a child: the test proves nothing", fd)
	}
	if err := closeInheritedOnExec(); err != nil {
		t.Fatal(err)
	}
	if childHas() {
		t.Errorf("a child still inherits descriptor %d", fd)
	}
	if _, err := os.Stat("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		t.Errorf("the descriptor itself must stay open: %v", err)
	}
}
