package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/agent/mover"
)

// caches lends each backup the kopia or restic cache that the earlier backups of its
// repository left on this node, so that a re-backup reads the repository's indexes and
// the previous snapshot's directories from local disk instead of the store (the kopia
// CLI keeps its cache between runs too). A cache holds only what the store holds,
// encrypted; the repository's config and credentials stay in the job's private work
// directory. One job uses a cache at a time: a second backup of the same repository
// meanwhile starts with an empty cache of its own, as every job did before. The caches
// together are kept under a size budget by removing the least recently used.
type caches struct {
	root   string
	budget int64

	mu   sync.Mutex
	busy map[string]bool
}

// restorePrefix names the caches of restores, which live only as long as their job.
const restorePrefix = "restore-"

func newCaches(root string, budget int64) (*caches, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	// A restore's cache left by an agent that stopped mid-job is of no use to anyone.
	if stale, err := filepath.Glob(filepath.Join(root, restorePrefix+"*")); err == nil {
		for _, dir := range stale {
			_ = os.RemoveAll(dir)
		}
	}
	return &caches{root: root, budget: budget, busy: map[string]bool{}}, nil
}

// scratch returns an empty cache directory for one restore and the function that
// removes it. A restore reads each pack once, so nothing in its cache is worth
// keeping, but it writes up to its data cache's size (256 MiB) into it: in the
// memory-backed work directory that counts against the agent's memory limit, here it
// is on the cache volume's disk, as the kopia CLI's cache is.
func (c *caches) scratch() (string, func(), error) {
	dir, err := os.MkdirTemp(c.root, restorePrefix)
	if err != nil {
		return "", func() {}, err
	}
	name := filepath.Base(dir)
	c.mu.Lock()
	c.busy[name] = true
	c.mu.Unlock()
	return dir, func() {
		_ = os.RemoveAll(dir)
		c.mu.Lock()
		delete(c.busy, name)
		c.mu.Unlock()
	}, nil
}

// cacheKey names the cache of a job's repository: the same store, namespace and
// uploader, whatever the pod or volume.
func cacheKey(job mover.Job) string {
	loc, _ := json.Marshal(job.Location)
	sum := sha256.Sum256([]byte(string(job.Uploader) + "\x00" + job.Namespace + "\x00" + string(loc)))
	return string(job.Uploader) + "-" + hex.EncodeToString(sum[:10])
}

// lend returns the cache directory of key and the function that gives it back, or ""
// (and a no-op) while another job holds it.
func (c *caches) lend(key string) (string, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[key] {
		return "", func() {}
	}
	c.busy[key] = true
	dir := filepath.Join(c.root, key)
	return dir, func() {
		now := time.Now()
		_ = os.Chtimes(dir, now, now) // the last use orders the eviction
		c.mu.Lock()
		delete(c.busy, key)
		c.mu.Unlock()
		c.trim()
	}
}

// trim removes the least recently used caches not in use until the rest fit the budget.
func (c *caches) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := os.ReadDir(c.root)
	if err != nil {
		return
	}
	type cacheDir struct {
		name string
		used time.Time
		size int64
	}
	var dirs []cacheDir
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !e.IsDir() {
			continue
		}
		d := cacheDir{name: e.Name(), used: info.ModTime(), size: dirSize(filepath.Join(c.root, e.Name()))}
		dirs = append(dirs, d)
		total += d.size
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].used.Before(dirs[j].used) })
	for _, d := range dirs {
		if total <= c.budget {
			return
		}
		if c.busy[d.name] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.root, d.name)); err != nil {
			ctrl.Log.WithName("agent").Error(err, "removing a repository cache over the budget", "cache", d.name)
			continue
		}
		total -= d.size
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
