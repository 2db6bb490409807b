package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The caches are lent one job at a time per repository and kept under the budget by
// removing the least recently used, never one in use.
func TestCachesLendAndTrim(t *testing.T) {
	c, err := newCaches(t.TempDir(), 3000)
	if err != nil {
		t.Fatal(err)
	}
	fill := func(dir string, size int) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "blob"), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, giveBackOld := c.lend("old")
	if again, _ := c.lend("old"); again != "" {
		t.Fatalf("a cache in use was lent twice (%s)", again)
	}
	fill(old, 1000)
	giveBackOld()
	// Make "old" clearly the least recently used.
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	busy, giveBackBusy := c.lend("busy")
	fill(busy, 1500)
	recent, giveBackRecent := c.lend("recent")
	fill(recent, 1000)
	giveBackRecent() // 3500 bytes in all: "old" goes, "busy" stays although in use
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the least recently used cache was kept over the budget (stat: %v)", err)
	}
	for _, d := range []string{busy, recent} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if dir, _ := c.lend("old"); dir == "" {
		t.Error("a removed cache cannot be lent again")
	}
	giveBackBusy()
}

// A restore's cache is its own, is never trimmed while the restore runs, and is gone
// when it ends; one left by an agent that stopped is removed when the next starts.
func TestRestoreCachesLiveAsLongAsTheirJob(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, restorePrefix+"left-by-a-crash"), 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := newCaches(root, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, restorePrefix+"left-by-a-crash")); !os.IsNotExist(err) {
		t.Fatalf("a restore cache left by an earlier agent is still there (%v)", err)
	}
	dir, release, err := c.scratch()
	if err != nil {
		t.Fatal(err)
	}
	other, releaseOther, err := c.scratch()
	if err != nil {
		t.Fatal(err)
	}
	if dir == other || filepath.Dir(dir) != root {
		t.Fatalf("restore caches %s and %s: want two directories under %s", dir, other, root)
	}
	if err := os.WriteFile(filepath.Join(dir, "pack"), make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	c.trim() // 1000 bytes over a budget of 10
	if _, err := os.Stat(filepath.Join(dir, "pack")); err != nil {
		t.Fatalf("trim removed the cache of a running restore: %v", err)
	}
	release()
	releaseOther()
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("restore caches left after their jobs: %v", entries)
	}
}
