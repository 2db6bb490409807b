package kopiarestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/kopia/kopia/repo/blob"
)

// countingStore is a blob.Storage of blobs in memory that counts the reads it serves.
type countingStore struct {
	blob.Storage // nil: only GetBlob is used
	blobs        map[blob.ID][]byte

	mu           sync.Mutex
	ranged, full int
}

func (s *countingStore) GetBlob(_ context.Context, id blob.ID, offset, length int64, out blob.OutputBuffer) error {
	b, ok := s.blobs[id]
	if !ok {
		return blob.ErrBlobNotFound
	}
	s.mu.Lock()
	if length < 0 {
		s.full++
		length = int64(len(b)) - offset
	} else {
		s.ranged++
	}
	s.mu.Unlock()
	if offset+length > int64(len(b)) {
		return errors.New("read past the end of the blob")
	}
	out.Reset()
	_, err := out.Write(b[offset : offset+length])
	return err
}

func (s *countingStore) reads() (ranged, full int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ranged, s.full
}

func packOf(id string, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(id))
	}
	return b
}

func read(t *testing.T, st blob.Storage, id blob.ID, offset, length int64) []byte {
	t.Helper()
	var out sliceBuffer
	if err := st.GetBlob(context.Background(), id, offset, length, &out); err != nil {
		t.Fatalf("reading %s at %d+%d: %v", id, offset, length, err)
	}
	return out.b
}

// TestPackReadsServeSmallReadsFromTheWholePack: the small files of a restore, read
// one content each, cost one read of their pack instead of one request each; a pack
// read for one content only, and a large content, are read from the store alone.
func TestPackReadsServeSmallReadsFromTheWholePack(t *testing.T) {
	store := &countingStore{blobs: map[blob.ID][]byte{"p1": packOf("p1", 1<<20), "p2": packOf("p2", 1<<20)}}
	st := newPackReads(store, 1<<20)
	for i := range 100 {
		off := int64(i * 4096)
		if got := read(t, st, "p1", off, 4096); !bytes.Equal(got, store.blobs["p1"][off:off+4096]) {
			t.Fatalf("read %d of p1 differs from the pack", i)
		}
	}
	if ranged, full := store.reads(); ranged != 1 || full != 1 {
		t.Errorf("100 small reads of one pack made %d reads of a range and %d of the pack, want 1 and 1", ranged, full)
	}

	read(t, st, "p2", 0, 4096) // one small content: not worth the pack
	read(t, st, "p2", 0, smallRead+1)
	if ranged, full := store.reads(); ranged != 3 || full != 1 {
		t.Errorf("one small and one large read of p2 made %d range reads and %d pack reads in all, want 3 and 1", ranged, full)
	}
}

// TestPackReadsKeepABoundedNumberOfPacks: reads that go round more packs than are kept
// are still served right, and no more than keepPacks packs are held in memory.
func TestPackReadsKeepABoundedNumberOfPacks(t *testing.T) {
	store := &countingStore{blobs: map[blob.ID][]byte{}}
	var ids []blob.ID
	for i := range 3 * keepPacks {
		id := blob.ID(fmt.Sprintf("p%02d", i))
		store.blobs[id] = packOf(string(id), 64<<10)
		ids = append(ids, id)
	}
	st := newPackReads(store, 64<<10)
	for round := range 3 {
		for _, id := range ids {
			off := int64(round * 1000)
			if got := read(t, st, id, off, 1000); !bytes.Equal(got, store.blobs[id][off:off+1000]) {
				t.Fatalf("round %d: read of %s differs from the pack", round, id)
			}
		}
		held := 0
		for _, p := range st.packs {
			if p.data != nil {
				held++
			}
		}
		if held > keepPacks {
			t.Errorf("round %d: %d packs held in memory, want at most %d", round, held, keepPacks)
		}
	}
}

// TestPackReadsPassOnAMissingPack: a pack the store does not have fails the read with
// the store's error, not with a read of an empty pack.
func TestPackReadsPassOnAMissingPack(t *testing.T) {
	store := &countingStore{blobs: map[blob.ID][]byte{}}
	st := newPackReads(store, 1<<20)
	for range 3 {
		var out sliceBuffer
		if err := st.GetBlob(context.Background(), "gone", 0, 100, &out); !errors.Is(err, blob.ErrBlobNotFound) {
			t.Fatalf("read of a missing pack: %v, want blob.ErrBlobNotFound", err)
		}
	}
}
