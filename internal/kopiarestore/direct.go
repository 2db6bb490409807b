package kopiarestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/object"
)

// DirectReads reads file contents straight from the repository's store, past kopia's
// data cache. A restore reads each content once, so the cache only costs: kopia writes
// every content it reads into it, and the cache, bounded, deletes the oldest again.
// For 8 files of 512 MiB that doubled what the restore wrote to disk and its CPU time
// (one snapshot restored alternately, 4 runs each: 2.7-3.1 s wall and 4.3-4.8 s CPU
// past the cache, 5.1-7.9 s and 8.6-13.1 s through it). Small files are read from
// whole packs kept in memory (see packReads). Directories still go through the cached
// repository: metadata packs are read whole and reused.
//
// The reader is a second content manager over the same repository format: it needs no
// second key derivation, but loads the content index again (kept in memory, as kopia
// does without a cache directory). It is set up on the first file, so that a restore
// of directories only pays nothing. A content that two files share is read from the
// store twice.
type DirectReads struct {
	rep     repo.DirectRepository
	storage func(context.Context) (blob.Storage, error)

	mu     sync.Mutex
	st     blob.Storage
	shared *content.SharedManager
	reader *content.WriteManager // only read from
	err    error
}

// NewDirectReads returns reads for rep; storage opens the repository's store anew.
func NewDirectReads(rep repo.DirectRepository, storage func(context.Context) (blob.Storage, error)) *DirectReads {
	return &DirectReads{rep: rep, storage: storage}
}

// setup opens the content manager once. When it cannot, Err says why and every file
// is read through the cached repository instead, as before.
func (d *DirectReads) setup(ctx context.Context) *content.WriteManager {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reader != nil || d.err != nil {
		return d.reader
	}
	st, err := d.storage(ctx)
	if err != nil {
		d.err = fmt.Errorf("opening the store for uncached reads: %w", err)
		return nil
	}
	// No cache directory: kopia passes every read through to the store, here through
	// packReads.
	packSize := int64(d.rep.ContentReader().ContentFormat().GetCachedMutableParameters().MaxPackSize)
	shared, err := content.NewSharedManager(ctx, newPackReads(st, packSize), d.rep.ContentReader().ContentFormat(), &content.CachingOptions{}, nil, nil, nil)
	if err != nil {
		_ = st.Close(ctx)
		d.err = fmt.Errorf("loading the content index for uncached reads: %w", err)
		return nil
	}
	d.st, d.shared = st, shared
	d.reader = content.NewWriteManager(ctx, shared, content.SessionOptions{}, "")
	return d.reader
}

// open opens the object past the cache, or reports false when that is not possible.
// A file stored in several chunks is read ahead (see aheadReader).
func (d *DirectReads) open(ctx context.Context, id object.ID) (io.ReadCloser, bool) {
	cr := d.setup(ctx)
	if cr == nil {
		return nil, false
	}
	if idx, ok := id.IndexObjectID(); ok {
		if entries, err := object.LoadIndexObject(ctx, cr, idx); err == nil && len(entries) > 1 {
			return readAhead(ctx, cr, entries, chunksAhead), true
		}
	}
	r, err := object.Open(ctx, cr, id)
	if err != nil {
		return nil, false // the cached repository reads it, or reports the error
	}
	return r, true
}

// chunksAhead is how many chunks of a large file are read (fetched, decrypted and
// checked) at once. kopia reads an object one chunk after the other, so a restore of
// one large file used one CPU: a 4 GiB file took 6.1 s with 6.1 s of CPU, where restic,
// reading in parallel, took 6.7 s with 8.8 s. Each chunk in flight is held in memory
// whole (kopia's chunks average 4 MiB, at most 8 MiB), for each of the restore's
// workers writing a large file.
const chunksAhead = 3

// aheadReader returns the chunks of an indirect object in order while the next ones
// are read in the background.
type aheadReader struct {
	cancel  context.CancelFunc
	pending chan chan fetched // one per chunk, in order; at most chunksAhead started ahead
	cur     io.ReadCloser
	err     error
	done    sync.WaitGroup
}

type fetched struct {
	r   io.ReadCloser
	err error
}

func readAhead(ctx context.Context, cr *content.WriteManager, entries []object.IndirectObjectEntry, ahead int) *aheadReader {
	ctx, cancel := context.WithCancel(ctx)
	a := &aheadReader{cancel: cancel, pending: make(chan chan fetched, ahead-1)}
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		defer close(a.pending)
		for _, e := range entries {
			ch := make(chan fetched, 1)
			select {
			case a.pending <- ch:
			case <-ctx.Done():
				return
			}
			a.done.Add(1)
			go func() {
				defer a.done.Done()
				r, err := object.Open(ctx, cr, e.Object)
				if err == nil && r.Length() != e.Length {
					err = fmt.Errorf("the chunk %v at %d holds %d bytes, its file's index says %d", e.Object, e.Start, r.Length(), e.Length)
					_ = r.Close()
					r = nil
				}
				ch <- fetched{r: r, err: err}
			}()
		}
	}()
	return a
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for a.err == nil {
		if a.cur == nil {
			ch, ok := <-a.pending
			if !ok {
				a.err = io.EOF
				break
			}
			f := <-ch
			if f.err != nil {
				a.err = f.err
				break
			}
			a.cur = f.r
		}
		n, err := a.cur.Read(p)
		if err == io.EOF {
			_ = a.cur.Close()
			a.cur = nil
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, a.err
}

// Close stops the reads ahead and waits for them.
func (a *aheadReader) Close() error {
	a.cancel()
	if a.cur != nil {
		_ = a.cur.Close()
	}
	for ch := range a.pending {
		if f := <-ch; f.r != nil {
			_ = f.r.Close()
		}
	}
	a.done.Wait()
	return nil
}

// Err reports why uncached reads could not be set up, if they could not.
func (d *DirectReads) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Close releases the content manager and the store; reads must have ended.
func (d *DirectReads) Close(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if d.shared != nil {
		errs = append(errs, d.shared.CloseShared(ctx))
		d.shared, d.reader = nil, nil
	}
	if d.st != nil {
		errs = append(errs, d.st.Close(ctx))
		d.st = nil
	}
	return errors.Join(errs...)
}
