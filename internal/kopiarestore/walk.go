package kopiarestore

import (
	"context"
	"fmt"
	"path"
	"sync/atomic"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sync/errgroup"
)

// Stats counts what a Restore wrote, and what it knows it has to write.
type Stats struct {
	Files, Bytes int64
	// TotalFiles and TotalBytes are the restore's files and bytes: the snapshot's
	// own count when the root carries one, else what the walk has reached so far.
	TotalFiles, TotalBytes int64
}

// queuedEntries is how many files and symlinks the walk may have handed to the
// workers and not yet seen written. It bounds the directories that are open at once
// (begun, not finished) to about the depth of the tree plus this many, whatever the
// size of the snapshot.
const queuedEntries = 256

// Restore writes root (a directory of a snapshot, or a file) through out with
// parallel workers, and returns what it wrote. progress, when not nil, is called
// after every file with the counts so far, from any goroutine.
//
// kopia's restore.Entry lists every directory of the snapshot before it writes the
// first file: its work queue holds directories at the front and files at the back, so
// the decoded entry of every file is in memory at once (about 0.8 KiB per file; 1.7
// GiB for 2,000,000 files). Restore walks the tree depth first instead and blocks when
// queuedEntries files wait for a worker, so it holds the listings of the directories
// on the path it is in and the queued files: bounded by the largest directory, not by
// the snapshot. A directory is finished (its metadata, then its subdirectories'
// times, see FinishDirectory) when the last entry below it is written, as in kopia;
// the root last of all.
func Restore(ctx context.Context, out *Output, root fs.Entry, parallel int, progress func(Stats)) (Stats, error) {
	w := &walker{out: out, jobs: make(chan func(context.Context) error, queuedEntries), progress: progress}
	if de, ok := root.(snapshot.HasDirEntry); ok {
		if s := de.DirEntry().DirSummary; s != nil {
			w.knownFiles, w.knownBytes = s.TotalFileCount, s.TotalFileSize
		} else if _, isFile := root.(fs.File); isFile {
			w.knownFiles, w.knownBytes = 1, root.Size()
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for range max(1, parallel) {
		g.Go(func() error {
			for job := range w.jobs {
				if ctx.Err() != nil {
					continue // drain: the walk stops at its next send
				}
				if err := job(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(w.jobs)
		return w.entry(ctx, root, "", func(context.Context) error { return nil })
	})
	err := g.Wait()
	return w.stats(), err
}

type walker struct {
	out      *Output
	jobs     chan func(context.Context) error
	progress func(Stats)

	knownFiles, knownBytes int64
	files, bytes           atomic.Int64
	seenFiles, seenBytes   atomic.Int64
}

func (w *walker) stats() Stats {
	return Stats{Files: w.files.Load(), Bytes: w.bytes.Load(),
		TotalFiles: max(w.knownFiles, w.seenFiles.Load()), TotalBytes: max(w.knownBytes, w.seenBytes.Load())}
}

// entry restores e at rel and calls done once it and everything below it is written.
// Directories are walked here; files and symlinks are handed to the workers.
func (w *walker) entry(ctx context.Context, e fs.Entry, rel string, done func(context.Context) error) error {
	switch e := e.(type) {
	case fs.Directory:
		return w.directory(ctx, e, rel, done)
	case fs.File:
		w.seenFiles.Add(1)
		w.seenBytes.Add(e.Size())
		return w.queue(ctx, func(ctx context.Context) error {
			if err := w.file(ctx, e, rel); err != nil {
				return err
			}
			return done(ctx)
		})
	case fs.Symlink:
		return w.queue(ctx, func(ctx context.Context) error {
			if err := w.out.CreateSymlink(ctx, rel, e); err != nil {
				return fmt.Errorf("restoring the symlink %s: %w", DecodePath(rel), err)
			}
			return done(ctx)
		})
	default:
		return fmt.Errorf("restoring %s: the snapshot holds an entry of unknown type %T", DecodePath(rel), e)
	}
}

func (w *walker) queue(ctx context.Context, job func(context.Context) error) error {
	select {
	case w.jobs <- job:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// directory makes d, walks its entries and finishes it after the last of them: the
// count starts one above the entries, for the walk itself, so that a directory whose
// entries are all written before the walk is through its listing is not finished
// early.
func (w *walker) directory(ctx context.Context, d fs.Directory, rel string, done func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.out.BeginDirectory(ctx, rel, d); err != nil {
		return fmt.Errorf("restoring the directory %s: %w", DecodePath(rel), err)
	}
	entries, err := fs.GetAllEntries(ctx, d)
	if err != nil {
		return fmt.Errorf("reading the directory %s from the snapshot: %w", DecodePath(rel), err)
	}
	var pending atomic.Int64
	pending.Store(int64(len(entries)) + 1)
	finish := func(ctx context.Context) error {
		if pending.Add(-1) != 0 {
			return nil
		}
		if err := w.out.FinishDirectory(ctx, rel, d); err != nil {
			return fmt.Errorf("restoring the directory %s: %w", DecodePath(rel), err)
		}
		return done(ctx)
	}
	for i, e := range entries {
		entries[i] = nil // held by its job from here on, not by the listing
		if err := w.entry(ctx, e, path.Join(rel, e.Name()), finish); err != nil {
			return err
		}
	}
	return finish(ctx)
}

// file writes f and counts it; its bytes are counted as they are written, so that
// progress moves within a large file.
func (w *walker) file(ctx context.Context, f fs.File, rel string) error {
	var written int64
	err := w.out.WriteFile(ctx, rel, f, func(n int64) {
		written += n
		w.bytes.Add(n)
	})
	if err != nil {
		return fmt.Errorf("restoring %s: %w", DecodePath(rel), err)
	}
	w.bytes.Add(f.Size() - written)
	w.files.Add(1)
	if w.progress != nil {
		w.progress(w.stats())
	}
	return nil
}
