package repository

import (
	"fmt"
	"math/bits"

	"github.com/chmduquesne/rollinghash/buzhash32"
	"github.com/kopia/kopia/repo/splitter"
)

// cutter finds where a splitter cuts a chunk held whole in memory.
type cutter interface {
	// cut returns the length of the chunk that starts at chunk[0], or -1 when its end
	// lies past the end of chunk; the call before, if any since reset, was given
	// chunk[:done], which is unchanged.
	cut(chunk []byte, done int) int
	// reset starts a new chunk.
	reset()
	maxSize() int
	close()
}

// newCutter returns the cutter of the named splitter: for kopia's DYNAMIC-…-BUZHASH
// splitters a loop of its own (buzhashCutter), for any other the splitter itself.
func newCutter(name string) (cutter, error) {
	if avg, ok := buzhashAverage[name]; ok {
		return newBuzhashCutter(avg), nil
	}
	factory := splitter.GetFactory(name)
	if factory == nil {
		return nil, fmt.Errorf("unknown splitter %q", name)
	}
	return &splitterCutter{sp: factory()}, nil
}

// splitterCutter is a kopia splitter as a cutter: it is given each byte once.
type splitterCutter struct{ sp splitter.Splitter }

func (c *splitterCutter) cut(chunk []byte, done int) int {
	if n := c.sp.NextSplitPoint(chunk[done:]); n >= 0 {
		return done + n
	}
	return -1
}
func (c *splitterCutter) reset()       { c.sp.Reset() }
func (c *splitterCutter) maxSize() int { return c.sp.MaxSegmentSize() }
func (c *splitterCutter) close()       { c.sp.Close() }

// buzhashAverage is the average chunk size of each of kopia's buzhash splitters
// (repo/splitter: DYNAMIC is an older name of DYNAMIC-4M-BUZHASH).
var buzhashAverage = map[string]int{
	"DYNAMIC-128K-BUZHASH": 128 << 10,
	"DYNAMIC-256K-BUZHASH": 256 << 10,
	"DYNAMIC-512K-BUZHASH": 512 << 10,
	"DYNAMIC-1M-BUZHASH":   1 << 20,
	"DYNAMIC-2M-BUZHASH":   2 << 20,
	"DYNAMIC-4M-BUZHASH":   4 << 20,
	"DYNAMIC-8M-BUZHASH":   8 << 20,
	"DYNAMIC":              4 << 20,
}

// buzhashWindow is the bytes kopia's buzhash splitters hash at each position.
const buzhashWindow = 64

// buzhashTable is the byte table of kopia's buzhash splitters (rollinghash's
// buzhash32.New, generated from seed 1).
var buzhashTable = buzhash32.GenerateHashes(1)

// buzhashCutter cuts where kopia's buzhash splitter of the same average size does,
// at twice its speed, which matters because the changed regions of a large file are
// split again on every backup (kopia_reuse.go). kopia's splitter rolls a 32-bit
// buzhash over a 64-byte window and cuts a chunk of length n, for n from half the
// average to twice it, at the first n where the hash of the chunk's bytes
// [n-64, n) has no bit of average-1 set, else at twice the average. Before half the
// average it only rolls the last 64 bytes, so the hash at every n it tests depends
// on those 64 bytes alone: 64 rotations of a 32-bit word are none, so a byte's term
// leaves the sum exactly 64 bytes after it entered. This loop computes that same
// hash with the chunk in memory, reading the byte that leaves from the chunk
// instead of a ring buffer. TestBuzhashCutterCutsAsKopia holds it to kopia's cuts.
type buzhashCutter struct {
	mask     uint32
	min, max int
}

func newBuzhashCutter(avg int) *buzhashCutter {
	return &buzhashCutter{mask: uint32(avg - 1), min: avg / 2, max: avg * 2}
}

func (c *buzhashCutter) cut(chunk []byte, done int) int {
	// n is a chunk length tested; the hash covers chunk[n-64:n].
	from := max(c.min, done+1)
	to := min(len(chunk), c.max)
	if from <= to {
		// The hash of the 64 bytes before the first byte rolled in; minSize > 64.
		var h uint32
		for _, b := range chunk[from-1-buzhashWindow : from-1] {
			h = bits.RotateLeft32(h, 1) ^ buzhashTable[b]
		}
		out := chunk[from-1-buzhashWindow : to-buzhashWindow]
		in := chunk[from-1 : to]
		for i, b := range in {
			h = bits.RotateLeft32(h, 1) ^ buzhashTable[out[i]] ^ buzhashTable[b]
			if h&c.mask == 0 {
				return from + i
			}
		}
	}
	if len(chunk) >= c.max {
		return c.max
	}
	return -1
}

func (c *buzhashCutter) reset()       {}
func (c *buzhashCutter) maxSize() int { return c.max }
func (c *buzhashCutter) close()       {}
