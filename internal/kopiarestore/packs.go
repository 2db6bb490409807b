package kopiarestore

import (
	"context"
	"fmt"
	"sync"

	"github.com/kopia/kopia/repo/blob"
)

// packReads is the store under the uncached reader of a restore (see DirectReads). A
// restore reads the contents of small files, which share packs, about in the order the
// backup wrote them. From the second small read of a pack on, packReads reads the
// whole pack once (one read of the pack file, one GET of an object store) and serves
// the pack's small reads from memory, as restic restores from whole packs; a pack
// read for one small content only, and every large read, go to the store alone.
// kopia's decryption and checks of each content, above this layer, are unchanged.
//
// This replaces putting packs in kopia's data cache before small files are read
// (packPrefetcher, still used when the uncached reader cannot be set up): the cache
// wrote each pack to a file with a checksum over the whole of it and read every
// content back from that file. Restoring the mixed set at half scale in-process
// (2 CPUs, three restores each, into a file system with no recently deleted inodes)
// took 1.8, 2.8 and 4.2 s (2.1, 3.6, 3.1 s in a second round) through the cache,
// slower as its files piled up, and 2.1, 1.9 and 2.0 s through packReads.
type packReads struct {
	blob.Storage
	packSize int64 // a pack's usual size, to allocate its buffer at once

	mu    sync.Mutex
	packs []*pack  // least recently used first
	free  [][]byte // the buffer of a pack no longer kept, for the next pack read
}

type pack struct {
	id         blob.ID
	smallReads int
	ready      chan struct{} // closed when data or err is set; nil until the pack is read
	data       []byte
	err        error
	// readers is how many reads use data; dropped is set when the pack is no longer
	// kept, and its buffer is reused after its last reader.
	readers int
	dropped bool
}

const (
	// smallRead is the largest read served from a whole pack.
	smallRead = 256 << 10
	// keepPacks bounds the memory of the packs kept: with one more buffer free for
	// the next pack, at kopia's default pack size of about 20 MiB, under 100 MiB.
	keepPacks = 3
	// rememberPacks is how many packs' small reads are counted, kept or not.
	rememberPacks = 64
)

func newPackReads(st blob.Storage, packSize int64) *packReads {
	return &packReads{Storage: st, packSize: packSize}
}

// GetBlob serves a small read from the pack in memory, reading the whole pack on the
// second small read of it; anything else is passed to the store.
func (s *packReads) GetBlob(ctx context.Context, id blob.ID, offset, length int64, out blob.OutputBuffer) error {
	if length < 0 || length > smallRead {
		return s.Storage.GetBlob(ctx, id, offset, length, out)
	}
	p, buf := s.use(id)
	if p == nil {
		return s.Storage.GetBlob(ctx, id, offset, length, out)
	}
	defer s.done(p)
	if buf != nil {
		b := sliceBuffer{b: buf[:0]}
		p.err = s.Storage.GetBlob(ctx, id, 0, -1, &b)
		p.data = b.b
		close(p.ready)
	}
	select {
	case <-p.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.err != nil || offset < 0 || offset+length > int64(len(p.data)) {
		// The read alone says what is wrong, if anything is.
		return s.Storage.GetBlob(ctx, id, offset, length, out)
	}
	out.Reset()
	if _, err := out.Write(p.data[offset : offset+length]); err != nil {
		return fmt.Errorf("copying from pack %s: %w", id, err)
	}
	return nil
}

// done ends a read of p; the last reader of a pack no longer kept frees its buffer.
func (s *packReads) done(p *pack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.readers--
	s.release(p)
}

func (s *packReads) release(p *pack) {
	if p.dropped && p.readers == 0 && p.data != nil {
		if len(s.free) == 0 {
			s.free = append(s.free, p.data[:0])
		}
		p.data = nil
	}
}

// use counts a small read of pack id. It returns the pack when it is (or is about to
// be) held in memory, with a buffer when the caller is the one to read it.
func (s *packReads) use(id blob.ID) (p *pack, buf []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := -1
	for j, q := range s.packs {
		if q.id == id {
			i = j
			break
		}
	}
	if i < 0 {
		p = &pack{id: id}
		if len(s.packs) == rememberPacks {
			s.drop(0)
			s.packs = s.packs[1:]
		}
	} else {
		p = s.packs[i]
		s.packs = append(s.packs[:i], s.packs[i+1:]...)
	}
	s.packs = append(s.packs, p) // most recently used last
	p.smallReads++
	if p.ready == nil {
		if p.smallReads < 2 {
			return nil, nil // a pack read for one small content is not read whole
		}
		p.ready = make(chan struct{})
		if n := len(s.free); n > 0 {
			buf, s.free = s.free[n-1], s.free[:n-1]
		} else {
			// kopia closes a pack once it passes its size: room for a bit more.
			buf = make([]byte, 0, s.packSize+s.packSize/8)
		}
	}
	p.readers++
	// Only the keepPacks most recently used packs keep their data.
	held := 0
	for j := len(s.packs) - 1; j >= 0; j-- {
		if s.packs[j].ready == nil {
			continue
		}
		if held++; held > keepPacks {
			s.drop(j)
		}
	}
	return p, buf
}

// drop forgets the data of the pack at i, keeping its count of small reads.
func (s *packReads) drop(i int) {
	q := s.packs[i]
	if q.ready == nil {
		return
	}
	q.dropped = true
	s.release(q)
	s.packs[i] = &pack{id: q.id, smallReads: q.smallReads}
}

// sliceBuffer is a blob.OutputBuffer over a byte slice.
type sliceBuffer struct{ b []byte }

func (s *sliceBuffer) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *sliceBuffer) Reset()      { s.b = s.b[:0] }
func (s *sliceBuffer) Length() int { return len(s.b) }
