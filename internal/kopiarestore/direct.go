package kopiarestore

import (
	"context"
	"errors"
	"fmt"
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
// past the cache, 5.1-7.9 s and 8.6-13.1 s through it). Directories and small files
// still go through the cached repository: metadata packs are read whole and reused,
// and small files are restored from prefetched packs.
//
// The reader is a second content manager over the same repository format: it needs no
// second key derivation, but loads the content index again (kept in memory, as kopia
// does without a cache directory). It is set up on the first large file, so that a
// restore without one pays nothing. A content that two files share is read from the
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
	// No cache directory: kopia passes every read through to the store.
	shared, err := content.NewSharedManager(ctx, st, d.rep.ContentReader().ContentFormat(), &content.CachingOptions{}, nil, nil, nil)
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
func (d *DirectReads) open(ctx context.Context, id object.ID) (object.Reader, bool) {
	cr := d.setup(ctx)
	if cr == nil {
		return nil, false
	}
	r, err := object.Open(ctx, cr, id)
	if err != nil {
		return nil, false // the cached repository reads it, or reports the error
	}
	return r, true
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
