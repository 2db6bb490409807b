package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/compression"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/repo/splitter"
	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
)

// Re-backing up a large file whose metadata changed, reusing the chunks of its previous object for the
// regions whose bytes did not change and splitting and hashing only the changed ones.
//
// kopia stores a large file as an indirect object: an index object (a JSON list of
// {start, length, object}) over direct objects, one per chunk the splitter cut. Its
// content-defined splitters (buzhash, rabin-karp) restart at every cut: where the next
// cut falls depends only on the bytes from the last cut on. So, at a cut of the
// previous object whose offset the new file shares (a file changed in place: a
// database, an image), a chunk whose bytes did not change is the chunk the splitter
// would cut again, and its object can be reused as is. After a changed chunk, the
// splitter runs over the new bytes until one of its cuts falls on a cut of the
// previous object; from there chunks are compared again. The chunks are therefore
// exactly those kopia's own writer would cut from the new file, the index is written
// as kopia writes it, and the object ID is the one kopia would produce: dedup is
// unchanged and the kopia CLI reads it as any other object.
//
// Whether a chunk's bytes changed is decided by a per-chunk fingerprint kept from the
// previous backup (reuseMap): XXH3-128 of the chunk's bytes, seeded from the
// repository's secret, computed from the very buffer that was stored (never from a
// second read). docs/agent.md ("Large files changed in place") says why a false
// "unchanged" is impossible in practice, and what a tenant can do to their own file's
// fingerprints.

// reuseMap is the per-file map a backup keeps for the next one: a fingerprint for each
// entry of Object's index, in order, and the splitter that cut them (the reasoning
// above holds only for cuts of the same splitter).
type reuseMap struct {
	Object   object.ID
	Splitter string
	// PartSize is the parts' size the object was cut in (reuseOptions.PartSize).
	PartSize int64
	// Fingerprint names the fingerprint function (fingerprintName).
	Fingerprint string
	Sums        [][16]byte
}

// fingerprintName is the function of fingerprint; a map of another one is not used.
const fingerprintName = "XXH3-128-SEEDED"

// previousFile is the file's object in the parent snapshot and its map.
type previousFile struct {
	Object object.ID
	Size   int64
	Map    *reuseMap
}

type reuseOptions struct {
	// Splitter is the splitter the normal upload uses for the file (the repository's
	// unless the policy names one); only splitters that restart at each cut are
	// supported (all of kopia's).
	Splitter string
	// PartSize is the policy's ParallelUploadAboveSize (<= 0: none): kopia's
	// uploader writes a file larger than that as parts of exactly PartSize bytes (the
	// last one the rest, possibly empty), each cut by a fresh splitter, and
	// concatenates them. Each part's end is then a forced cut, as a file's end is.
	PartSize int64
	// Compressor and MetadataCompressor as the upload's policy gives them.
	Compressor, MetadataCompressor compression.Name
	// Seed seeds the fingerprints; derived from the repository's secret.
	Seed uint64
	// Name describes the object (kopia's "FILE:" descriptions).
	Name string
	// Progress, when set, is told the bytes of each chunk stored or reused.
	Progress func(int64)
}

type reuseStats struct {
	ReusedChunks, ReusedBytes   int64
	WrittenChunks, WrittenBytes int64
}

// indirectIndex is kopia's index object (object.indirectObject, unexported): the same
// fields, tags and order, so that json.Encoder writes the same bytes.
type indirectIndex struct {
	StreamID string                       `json:"stream"`
	Entries  []object.IndirectObjectEntry `json:"entries"`
}

// errFileShrank is a file that ended before the size it had when it was opened.
var errFileShrank = errors.New("the file shrank while it was read")

// reuseReadBlock is how much splitFrom reads at a time.
const reuseReadBlock = 1 << 20

// writeReusing writes the first size bytes of f as a kopia object through w, reusing
// prev's chunks where their bytes are unchanged (prev may be nil: all is written), and
// returns the object, its map for the next backup and what it did.
func writeReusing(ctx context.Context, w repo.RepositoryWriter, f io.ReaderAt, size int64, prev *previousFile, opt reuseOptions) (object.ID, *reuseMap, reuseStats, error) {
	var st reuseStats
	if splitter.GetFactory(opt.Splitter) == nil {
		return object.EmptyID, nil, st, fmt.Errorf("unknown splitter %q", opt.Splitter)
	}
	if opt.PartSize < 0 {
		opt.PartSize = 0
	}
	old, oldSums, err := previousEntries(ctx, w, prev, opt)
	if err != nil {
		return object.EmptyID, nil, st, err
	}
	wk := &walk{w: w, f: f, size: size, opt: opt, old: old, oldSums: oldSums, starts: make(map[int64]int, len(old))}
	for i, e := range old {
		wk.starts[e.Start] = i
	}
	if prev != nil {
		wk.oldSize = prev.Size
	}
	wk.chk = startChecker(ctx, f, old, oldSums, opt.Seed, size)
	defer wk.chk.stop()

	// A part's chunks depend only on its own bytes (each part is cut by a fresh
	// splitter), so the parts are walked concurrently, as kopia uploads them.
	var parts []*walkedPart
	for at := int64(0); at < size; at = partEnd(at, size, opt.PartSize) {
		parts = append(parts, &walkedPart{start: at, end: partEnd(at, size, opt.PartSize)})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, p := range parts {
		g.Go(func() error { return wk.part(gctx, p) })
	}
	if err := g.Wait(); err != nil {
		return object.EmptyID, nil, st, err
	}
	var entries []object.IndirectObjectEntry
	var sums [][16]byte
	for _, p := range parts {
		entries = append(entries, p.entries...)
		sums = append(sums, p.sums...)
		st.add(p.st)
	}
	if opt.PartSize > 0 && size > opt.PartSize && size%opt.PartSize == 0 {
		// kopia's last part is then empty, and its empty chunk is concatenated too.
		id, err := writeChunk(ctx, w, nil, opt)
		if err != nil {
			return object.EmptyID, nil, st, err
		}
		entries = append(entries, object.IndirectObjectEntry{Start: size, Object: id})
		sums = append(sums, fingerprint(opt.Seed, nil))
	}

	var id object.ID
	switch len(entries) {
	case 0:
		// An empty file: kopia's writer stores one empty chunk.
		if id, err = writeChunk(ctx, w, nil, opt); err != nil {
			return object.EmptyID, nil, st, err
		}
		sums = [][16]byte{fingerprint(opt.Seed, nil)}
	case 1:
		id = entries[0].Object // kopia's writer returns a single chunk's object itself
	default:
		if id, err = writeIndex(ctx, w, entries, opt); err != nil {
			return object.EmptyID, nil, st, err
		}
	}
	return id, &reuseMap{Object: id, Splitter: opt.Splitter, PartSize: opt.PartSize, Fingerprint: fingerprintName, Sums: sums}, st, nil
}

// walk is one file's writing: the previous object's chunks and the file.
type walk struct {
	w       repo.RepositoryWriter
	f       io.ReaderAt
	size    int64
	opt     reuseOptions
	old     []object.IndirectObjectEntry
	oldSums [][16]byte
	oldSize int64
	// starts[o] is the index of old's entry that starts at offset o.
	starts map[int64]int
	chk    *checker
}

// walkedPart is a part of the file, [start, end), and what its walk stored.
type walkedPart struct {
	start, end int64
	entries    []object.IndirectObjectEntry
	sums       [][16]byte
	st         reuseStats
}

// part walks the part p from its start, a cut, to its end.
func (wk *walk) part(ctx context.Context, p *walkedPart) error {
	cuts, err := newCutter(wk.opt.Splitter)
	if err != nil {
		return err
	}
	defer cuts.close()
	add := func(e object.IndirectObjectEntry, sum [16]byte) {
		p.entries = append(p.entries, e)
		p.sums = append(p.sums, sum)
		if wk.opt.Progress != nil {
			wk.opt.Progress(e.Length)
		}
	}
	// One chunk is written while the next is split, as kopia's writer does
	// (AsyncWrites: 1): splitFrom alternates between two buffers, and a buffer is
	// split into again only after the write that read it ended.
	var scratch [2]splitScratch
	var next int
	var inFlight chan writeResult
	wait := func() error {
		if inFlight == nil {
			return nil
		}
		r := <-inFlight
		inFlight = nil
		if r.err != nil {
			return r.err
		}
		p.entries[r.index].Object = r.id
		return nil
	}
	defer func() { _ = wait() }()
	for pos := p.start; pos < p.end; {
		if i, ok := wk.starts[pos]; ok {
			// pos is a cut of the previous object: its chunk is the splitter's next one
			// if its bytes did not change and the cut at its end is the splitter's (the
			// previous file's end is not, unless the new file ends there too).
			e := wk.old[i]
			end := e.Start + e.Length
			if e.Length > 0 && end <= p.end && (!forcedCut(end, wk.oldSize, wk.opt.PartSize) || end == p.end) {
				same, err := wk.chk.same(ctx, i)
				if err != nil {
					return err
				}
				if same {
					add(object.IndirectObjectEntry{Start: pos, Length: e.Length, Object: e.Object}, wk.oldSums[i])
					p.st.ReusedChunks++
					p.st.ReusedBytes += e.Length
					pos = end
					continue
				}
			}
		}
		// Changed, or not at a shared cut: split from pos (a cut) up to the next cut.
		chunk, err := splitFrom(wk.f, cuts, pos, p.end, &scratch[next])
		if err != nil {
			return err
		}
		if err := wait(); err != nil {
			return err
		}
		index := len(p.entries)
		add(object.IndirectObjectEntry{Start: pos, Length: int64(len(chunk))}, fingerprint(wk.opt.Seed, chunk))
		inFlight = make(chan writeResult, 1)
		go func(done chan<- writeResult) {
			id, err := writeChunk(ctx, wk.w, chunk, wk.opt)
			done <- writeResult{index: index, id: id, err: err}
		}(inFlight)
		next = 1 - next
		p.st.WrittenChunks++
		p.st.WrittenBytes += int64(len(chunk))
		pos += int64(len(chunk))
	}
	return wait()
}

// writeResult is the end of a chunk's write: the object of p.entries[index].
type writeResult struct {
	index int
	id    object.ID
	err   error
}

func (s *reuseStats) add(o reuseStats) {
	s.ReusedChunks += o.ReusedChunks
	s.ReusedBytes += o.ReusedBytes
	s.WrittenChunks += o.WrittenChunks
	s.WrittenBytes += o.WrittenBytes
}

// previousEntries are prev's index entries and their fingerprints, or none when prev
// has no map, or one that does not describe its object exactly: then all is written.
func previousEntries(ctx context.Context, w repo.RepositoryWriter, prev *previousFile, opt reuseOptions) ([]object.IndirectObjectEntry, [][16]byte, error) {
	if prev == nil || prev.Map == nil || prev.Map.Object != prev.Object || prev.Map.Splitter != opt.Splitter ||
		prev.Map.PartSize != opt.PartSize || prev.Map.Fingerprint != fingerprintName {
		return nil, nil, nil
	}
	var entries []object.IndirectObjectEntry
	if idx, ok := prev.Object.IndexObjectID(); ok {
		r, err := w.OpenObject(ctx, idx)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the index of the previous object %v: %w", prev.Object, err)
		}
		var ind indirectIndex
		err = json.NewDecoder(r).Decode(&ind)
		_ = r.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("reading the index of the previous object %v: %w", prev.Object, err)
		}
		entries = ind.Entries
	} else {
		entries = []object.IndirectObjectEntry{{Start: 0, Length: prev.Size, Object: prev.Object}}
	}
	// Only a plain list of chunks that covers the previous file and matches the map.
	if len(entries) != len(prev.Map.Sums) {
		return nil, nil, nil
	}
	var at int64
	for i, e := range entries {
		// Only the last entry may be empty: the empty last part of a file of a
		// multiple of the part size.
		if e.Start != at || e.Length < 0 || (e.Length == 0 && i != len(entries)-1) {
			return nil, nil, nil
		}
		at += e.Length
	}
	if at != prev.Size {
		return nil, nil, nil
	}
	return entries, prev.Map.Sums, nil
}

// partEnd is the end of the part of a file of size bytes that holds offset pos: the
// limit of the chunk that starts there.
func partEnd(pos, size, partSize int64) int64 {
	if partSize <= 0 || size <= partSize {
		return size
	}
	if k := pos / partSize; k < size/partSize {
		return (k + 1) * partSize
	}
	return size
}

// forcedCut tells whether a cut at end of a file of size bytes was forced (the end of
// the file or of a part) rather than found by the splitter.
func forcedCut(end, size, partSize int64) bool {
	if end == size {
		return true
	}
	return partSize > 0 && size > partSize && end%partSize == 0
}

// splitScratch is splitFrom's buffer, kept from one chunk to the next.
type splitScratch struct {
	chunk []byte
}

// splitFrom returns the chunk c cuts from pos, a cut. The file is read straight into
// the chunk's buffer; bytes read past the cut are read again for the next chunk.
// limit is where the chunk must end at the latest (the end of the file or of its
// part). The chunk is in s, valid until the next call.
func splitFrom(f io.ReaderAt, c cutter, pos, limit int64, s *splitScratch) ([]byte, error) {
	c.reset()
	if s.chunk == nil {
		s.chunk = make([]byte, c.maxSize())
	}
	chunk := s.chunk[:0]
	for at := pos; at < limit; at = pos + int64(len(chunk)) {
		if len(chunk) == cap(chunk) {
			return nil, fmt.Errorf("the splitter did not cut within its largest chunk, %d bytes", cap(chunk))
		}
		b, err := readAt(f, chunk[len(chunk):cap(chunk)], at, min(reuseReadBlock, limit-at, int64(cap(chunk)-len(chunk))))
		if err != nil {
			return nil, err
		}
		done := len(chunk)
		chunk = chunk[:done+len(b)]
		if cut := c.cut(chunk, done); cut >= 0 {
			return chunk[:cut], nil
		}
	}
	return chunk, nil
}

// readAt reads n bytes of f at off into buf (grown as needed).
func readAt(f io.ReaderAt, buf []byte, off, n int64) ([]byte, error) {
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: it is shorter than %d bytes", errFileShrank, off+n)
		}
		return nil, err
	}
	return buf, nil
}

// chunkSplitter is the splitter writeChunk gives kopia's writer for a chunk of up to
// chunkSplitterSize bytes: it only counts, and cuts at that size at the earliest, so
// a chunk the content-defined splitter already cut is not rolled over a second time.
const (
	chunkSplitter     = "FIXED-8M"
	chunkSplitterSize = 8 << 20
)

// writeChunk stores one chunk as kopia's writer stores it, and returns its (direct)
// object: a chunk's object is its content, whichever splitter cut it, and the writer
// is given a splitter that cuts nothing inside it.
func writeChunk(ctx context.Context, w repo.RepositoryWriter, chunk []byte, opt reuseOptions) (object.ID, error) {
	sp := opt.Splitter
	if len(chunk) <= chunkSplitterSize {
		sp = chunkSplitter
	}
	ow := w.NewObjectWriter(ctx, object.WriterOptions{
		Description:        "FILE:" + opt.Name,
		Compressor:         opt.Compressor,
		MetadataCompressor: opt.MetadataCompressor,
		Splitter:           sp,
	})
	defer ow.Close() //nolint:errcheck
	if _, err := ow.Write(chunk); err != nil {
		return object.EmptyID, err
	}
	id, err := ow.Result()
	if err != nil {
		return object.EmptyID, err
	}
	if _, _, ok := id.ContentID(); !ok {
		return object.EmptyID, fmt.Errorf("the splitter %s cut a chunk of %s again: it does not restart at its cuts", opt.Splitter, opt.Name)
	}
	return id, nil
}

// writeIndex writes entries as kopia's writer writes a file's index (objectWriter's
// checkpoint: prefix "x", the metadata compressor, the repository's splitter) and
// returns the indirect object over it.
func writeIndex(ctx context.Context, w repo.RepositoryWriter, entries []object.IndirectObjectEntry, opt reuseOptions) (object.ID, error) {
	iw := w.NewObjectWriter(ctx, object.WriterOptions{
		Prefix:             "x",
		Description:        "LIST(FILE:" + opt.Name + ")",
		Compressor:         opt.MetadataCompressor,
		MetadataCompressor: opt.MetadataCompressor,
	})
	defer iw.Close() //nolint:errcheck
	if err := json.NewEncoder(iw).Encode(indirectIndex{StreamID: "kopia:indirect", Entries: entries}); err != nil {
		return object.EmptyID, err
	}
	id, err := iw.Result()
	if err != nil {
		return object.EmptyID, err
	}
	return object.ParseID("I" + id.String())
}

// fingerprint is the seeded XXH3-128 of b.
func fingerprint(seed uint64, b []byte) [16]byte {
	return xxh3.Hash128Seed(b, seed).Bytes()
}

// checker fingerprints the file's bytes at each chunk of the previous object, ahead
// of the walk and on several cores (in the common case, a file changed in a few
// places, the walk reuses nearly every chunk, and reading and fingerprinting the
// file is then all the work). Each result tells whether the bytes there now have the
// fingerprint the map recorded for the chunk. The bytes are read in blocks and
// fingerprinted as they come, so a chunk is never held in memory.
type checker struct {
	results []chan checkResult
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type checkResult struct {
	same bool
	err  error
}

// checkWorkers bounds the goroutines of a checker.
const checkWorkers = 4

// startChecker starts checking old's chunks (sums their fingerprints) that lie within
// the first size bytes of f.
func startChecker(ctx context.Context, f io.ReaderAt, old []object.IndirectObjectEntry, sums [][16]byte, seed uint64, size int64) *checker {
	ctx, cancel := context.WithCancel(ctx)
	c := &checker{results: make([]chan checkResult, len(old)), cancel: cancel}
	for i := range c.results {
		c.results[i] = make(chan checkResult, 1)
	}
	if len(old) == 0 {
		return c
	}
	var next atomic.Int64
	for range min(runtime.GOMAXPROCS(0), checkWorkers, len(old)) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			block := make([]byte, reuseReadBlock)
			h := xxh3.NewSeed128(seed)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(old) {
					return
				}
				e := old[i]
				if e.Length == 0 || e.Start+e.Length > size {
					continue // never reused: the walk does not ask
				}
				h.ResetSeed(seed)
				var err error
				for at, end := e.Start, e.Start+e.Length; at < end && err == nil; {
					var b []byte
					if b, err = readAt(f, block, at, min(int64(len(block)), end-at)); err == nil {
						_, _ = h.Write(b)
						at += int64(len(b))
					}
				}
				switch {
				case errors.Is(err, errFileShrank):
					// Not the same; the walk's own read reports the shrinking.
					c.results[i] <- checkResult{}
				case err != nil:
					c.results[i] <- checkResult{err: err}
				default:
					c.results[i] <- checkResult{same: h.Sum128().Bytes() == sums[i]}
				}
			}
		}()
	}
	return c
}

// same waits for the result of chunk i.
func (c *checker) same(ctx context.Context, i int) (bool, error) {
	select {
	case r := <-c.results[i]:
		return r.same, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// stop ends the checking and waits for its goroutines.
func (c *checker) stop() {
	c.cancel()
	c.wg.Wait()
}
