package repository

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kopia/kopia/repo/splitter"
)

// kopiaCuts is where kopia's splitter cuts data when its writer feeds it data in
// steps of the given sizes (cycled), one splitter for the whole stream.
func kopiaCuts(name string, data []byte, steps []int) []int {
	sp := splitter.GetFactory(name)()
	defer sp.Close()
	var cuts []int
	for pos, k := 0, 0; pos < len(data); k++ {
		b := data[pos:min(pos+steps[k%len(steps)], len(data))]
		for len(b) > 0 {
			n := sp.NextSplitPoint(b)
			if n < 0 {
				pos += len(b)
				break
			}
			pos += n
			cuts = append(cuts, pos)
			b = b[n:]
		}
	}
	return cuts
}

// cutterCuts is where c cuts data, given each chunk in the same steps.
func cutterCuts(c cutter, data []byte, steps []int) []int {
	var cuts []int
	for start, k := 0, 0; start < len(data); {
		c.reset()
		chunk, done := data[start:start], 0
		cut := -1
		for cut < 0 && start+len(chunk) < len(data) {
			done = len(chunk)
			chunk = data[start:min(start+done+steps[k%len(steps)], len(data))]
			k++
			cut = c.cut(chunk, done)
		}
		if cut < 0 {
			return cuts // the stream ends within a chunk: no cut
		}
		start += cut
		cuts = append(cuts, start)
	}
	return cuts
}

// The buzhash cutter cuts exactly where kopia's buzhash splitters do, whatever the
// data and however it arrives: random bytes (cuts by the hash), zeros and a short
// repeated text (the hash never or always matches: cuts at the largest or the
// smallest size), and random data with runs of zeros, fed whole, a byte at a time
// and in uneven steps.
func TestBuzhashCutterCutsAsKopia(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for name, avg := range buzhashAverage {
		size := 10 * avg
		mixed := random(size)
		for i := 0; i+avg/4 < size; i += 3 * avg {
			clear(mixed[i : i+avg/4])
		}
		data := map[string][]byte{
			"random": random(size),
			"zeros":  make([]byte, size),
			"text":   bytes.Repeat([]byte("the quick brown fox jumps over 64 lazy dogs\n"), size/44),
			"mixed":  mixed,
		}
		stepSets := map[string][]int{
			"whole":  {size},
			"1 MiB":  {1 << 20},
			"uneven": {1, 63, 64, 65, 4095, avg/2 - 1, 1, avg, 7, 3 * avg},
		}
		if avg <= 256<<10 {
			stepSets["bytes"] = []int{1}
		}
		for dn, d := range data {
			for sn, steps := range stepSets {
				want := kopiaCuts(name, d, steps)
				c, err := newCutter(name)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := c.(*buzhashCutter); !ok {
					t.Fatalf("%s: newCutter gave %T, want the buzhash cutter", name, c)
				}
				got := cutterCuts(c, d, steps)
				if !slices.Equal(got, want) {
					t.Errorf("%s, %s data fed %s: cuts\n%v\nwant kopia's\n%v", name, dn, sn, got, want)
				}
				if dn == "random" && len(want) < size/(2*avg) {
					t.Errorf("%s: only %d cuts in %d random bytes", name, len(want), size)
				}
			}
		}
	}
}

// Other splitters are kopia's own, cut for cut.
func TestCutterOfOtherSplitters(t *testing.T) {
	data := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	for _, name := range []string{"FIXED-1M", "DYNAMIC-1M-RABINKARP"} {
		c, err := newCutter(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*splitterCutter); !ok {
			t.Fatalf("%s: newCutter gave %T", name, c)
		}
		steps := []int{1 << 16, 12345}
		if got, want := cutterCuts(c, data, steps), kopiaCuts(name, data, steps); !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("%s: cuts %v, want %v", name, got, want)
		}
	}
	if _, err := newCutter("NO-SUCH-SPLITTER"); err == nil {
		t.Error("newCutter accepted an unknown splitter")
	}
}

func BenchmarkCutter(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{2}).Read(data)
	steps := []int{1 << 20}
	for _, name := range []string{"kopia", "holdfast"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if name == "kopia" {
					kopiaCuts(splitter.DefaultAlgorithm, data, steps)
				} else {
					c, _ := newCutter(splitter.DefaultAlgorithm)
					cutterCuts(c, data, steps)
				}
			}
		})
	}
}
