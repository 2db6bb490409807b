package bench

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Op is one measured operation.
type Op string

const (
	OpFirst     Op = "first backup"
	OpUnchanged Op = "unchanged re-backup"
	OpChanged   Op = "5 % changed re-backup"
	OpRestore   Op = "full restore"
)

// Ops in the order they run and are reported.
var Ops = []Op{OpFirst, OpUnchanged, OpChanged, OpRestore}

// Options say what Run measures.
type Options struct {
	Sets   []string
	Tools  []Tool
	Repeat int
	Scale  Scale
	// TempDir holds the data sets, repositories and restores; Run removes all it made.
	TempDir string
	// RestoreDir, when set, holds the restored trees instead of TempDir, each removed
	// as soon as it is checked: a file system of its own (a tmpfs), so that no restore
	// pays for the inodes an earlier one freed (see forgetDeletedInodes).
	RestoreDir string
	// ChangeFraction is the share changed before the changed re-backup (0.05).
	ChangeFraction float64
	// DropCaches empties the kernel's page cache (and its dentry and inode caches)
	// before every measured run, so that each starts from the same memory state and
	// reads its data set or repository from disk, as a nightly backup or a restore
	// would. Needs root.
	DropCaches bool
	Log        io.Writer
}

// SetResult is everything measured on one data set.
type SetResult struct {
	Set string
	// Scale is the set's own scale when it was asked for as name@scale (see SetScale).
	Scale float64 `json:",omitempty"`
	Files int64
	Bytes int64
	// Read is the page-cache read rate of the data set (the ceiling of any backup).
	Read Throughput
	// DiskRead is the rate of the same read with empty caches (with DropCaches only):
	// the ceiling of a backup that starts from disk.
	DiskRead Throughput `json:",omitempty"`
	// ChangeFraction is the share of the data set changed before the changed
	// re-backup (see ChangeFraction).
	ChangeFraction float64 `json:",omitempty"`
	// Samples[tool][op] holds one sample per repetition.
	Samples map[string]map[Op][]Sample
}

// Run generates each data set, measures every tool on it Repeat times, interleaved
// (A B C, A B C, ...), and removes the data set before the next one.
func Run(ctx context.Context, opts Options) ([]SetResult, error) {
	var out []SetResult
	for _, set := range opts.Sets {
		res, err := runSet(ctx, opts, set)
		if err != nil {
			return out, fmt.Errorf("data set %s: %w", set, err)
		}
		out = append(out, res)
	}
	return out, nil
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// SetScale splits a set as given to Run, name or name@scale, into its name and scale
// (def when it has none): one run can measure large sets at full scale beside a
// smaller many or db set, which at full scale need more disk than a machine has.
func SetScale(set string, def Scale) (string, Scale, error) {
	name, v, ok := strings.Cut(set, "@")
	if !ok {
		return set, def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return "", 0, fmt.Errorf("data set %q: the scale after @ must be a positive number", set)
	}
	return name, Scale(f), nil
}

func runSet(ctx context.Context, opts Options, given string) (SetResult, error) {
	set, scale, err := SetScale(given, opts.Scale)
	if err != nil {
		return SetResult{}, err
	}
	res := SetResult{Set: set, ChangeFraction: ChangeFraction(set, opts.ChangeFraction), Samples: map[string]map[Op][]Sample{}}
	if set != given {
		res.Scale = float64(scale)
	}
	dir, err := os.MkdirTemp(opts.TempDir, "holdfast-bench-"+set+"-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	opts.logf("%s: generating", set)
	ds, err := Generate(ctx, set, filepath.Join(dir, "data"), scale)
	if err != nil {
		return res, err
	}
	res.Files, res.Bytes = ds.Files, ds.Bytes
	// The sets before this one, and any earlier run, deleted their trees.
	if err := forgetDeletedInodes(ctx, opts, ds.Dir); err != nil {
		return res, err
	}
	var drop func() error
	if opts.DropCaches {
		drop = DropCaches
	}
	if res.DiskRead, res.Read, err = ReadThroughput(ctx, ds.Dir, drop); err != nil {
		return res, err
	}
	fromDisk := ""
	if res.DiskRead > 0 {
		fromDisk = ", from disk " + res.DiskRead.String()
	}
	opts.logf("%s: %d files, %.2f GiB, page-cache read %s%s", set, ds.Files, float64(ds.Bytes)/(1<<30), res.Read, fromDisk)

	for rep := 0; rep < opts.Repeat; rep++ {
		// Rotate who goes first so no tool always runs right after the data changed.
		tools := append(append([]Tool{}, opts.Tools[rep%len(opts.Tools):]...), opts.Tools[:rep%len(opts.Tools)]...)
		repos := filepath.Join(dir, fmt.Sprint("repos-", rep))
		for _, t := range tools {
			if err := t.Init(ctx, filepath.Join(repos, t.Name())); err != nil {
				return res, fmt.Errorf("%s: creating the repository: %w", t.Name(), err)
			}
		}
		snapshots := map[string]string{}
		var targets []string
		for _, op := range Ops {
			if op == OpChanged {
				if err := Change(ctx, ds, res.ChangeFraction, uint64(rep+1)); err != nil {
					return res, fmt.Errorf("changing the data set: %w", err)
				}
			}
			for _, t := range tools {
				// Every run starts with no dirty pages of the run before it to write back,
				// and, with DropCaches, with nothing of it in memory.
				if opts.DropCaches {
					if err := DropCaches(); err != nil { // it syncs first
						return res, err
					}
				} else {
					syscall.Sync()
				}
				var s Sample
				if op == OpRestore {
					base := dir
					if opts.RestoreDir != "" {
						base = opts.RestoreDir
					}
					target := filepath.Join(base, fmt.Sprintf("holdfast-bench-restore-%s-%s-%d", set, t.Name(), rep))
					if err := os.MkdirAll(target, 0o755); err != nil {
						return res, err
					}
					if opts.RestoreDir == "" {
						targets = append(targets, target)
					}
					s, err = t.Restore(ctx, snapshots[t.Name()], target)
					if err == nil {
						err = checkRestore(target, ds.Dir)
					}
					if opts.RestoreDir != "" {
						if rerr := os.RemoveAll(target); err == nil {
							err = rerr
						}
					}
				} else {
					s, snapshots[t.Name()], err = t.Backup(ctx, ds.Dir)
				}
				if err != nil {
					return res, fmt.Errorf("%s %s: %w", t.Name(), op, err)
				}
				sent := ""
				if s.Uploaded > 0 || s.Reused > 0 {
					sent = fmt.Sprintf("  uploaded %d MiB, reused %d MiB", s.Uploaded>>20, s.Reused>>20)
				}
				opts.logf("%s #%d %-22s %-16s wall %8s  cpu %8s  peak RSS %5d MiB%s", set, rep+1, res.opLabel(op), t.Name(),
					s.Wall.Round(time.Millisecond), s.CPU.Round(time.Millisecond), s.PeakRSS>>20, sent)
				if res.Samples[t.Name()] == nil {
					res.Samples[t.Name()] = map[Op][]Sample{}
				}
				res.Samples[t.Name()][op] = append(res.Samples[t.Name()][op], s)
			}
		}
		// The restored trees are removed only now. ext4 without a journal (this bench's
		// machine) does not reuse the inodes of files deleted in the last minutes, so a
		// restore of 200,000 files right after another tool's 200,000 were deleted spent
		// most of its time in the kernel stepping over them.
		for _, target := range append(targets, repos) {
			if err := os.RemoveAll(target); err != nil {
				return res, err
			}
		}
		if rep == opts.Repeat-1 {
			break // the next set starts with its own
		}
		if err := forgetDeletedInodes(ctx, opts, ds.Dir); err != nil {
			return res, err
		}
	}
	return res, nil
}

// forgetDeletedInodes lets the file system create files faster again after many were
// deleted, so that a restore pays less for the trees removed before it. ext4 without
// a journal passes over every inode deleted in the last minute while its inode table
// block is in memory, and in the last six minutes when that block is dirty, which
// creating a file in it makes it: each file created meanwhile looked at all of them,
// in the kernel (perf: ext4_create → recently_deleted → find_get_block_common, 38 % of
// a restore's samples right after 10,000 files were deleted; the mixed set's restore
// at half scale took 2.5 s on a quiet file system and 6-12 s after a deletion,
// whichever tool ran). Writing the blocks back and dropping them from memory ends the
// one-minute window; the six-minute one comes back as soon as a restore's creates read
// and dirty the blocks again, which only a file system of its own for the restores
// avoids (Options.RestoreDir, where this is not needed and not done). The data set is
// then read again so that the next backups find it in the page cache, as before.
// Without root, dropping is refused and the bench waits the minute out instead.
func forgetDeletedInodes(ctx context.Context, opts Options, data string) error {
	if opts.RestoreDir != "" {
		return nil // the restores write where nothing was deleted
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		opts.logf("waiting a minute for the deleted inodes to be reusable (%v)", err)
		select {
		case <-time.After(time.Minute):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if opts.DropCaches {
		return nil // every run starts from an empty cache anyway
	}
	_, _, err := ReadThroughput(ctx, data, nil)
	return err
}

// DropCaches writes back dirty pages and empties the kernel's page cache and its
// dentry and inode caches.
func DropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("emptying the page cache before a run needs root: %w", err)
	}
	return nil
}

// checkRestore compares the number and total size of the regular files restored with
// the source: a tool that restores nothing must not look fast.
func checkRestore(target, source string) error {
	count := func(dir string) (n, bytes int64, err error) {
		err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			n++
			bytes += info.Size()
			return nil
		})
		return n, bytes, err
	}
	wn, wb, err := count(source)
	if err != nil {
		return err
	}
	gn, gb, err := count(target)
	if err != nil {
		return err
	}
	if gn != wn || gb != wb {
		return fmt.Errorf("restored %d files, %d bytes; the source has %d files, %d bytes", gn, gb, wn, wb)
	}
	return nil
}
