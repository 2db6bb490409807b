package bench

import (
	"context"
	"encoding/xml"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataSetsAndChange generates every data set at a tiny scale and checks that a 5 %
// change changes what it says and keeps the large files' sizes.
func TestDataSetsAndChange(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"small", "large", "mixed"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ds, err := Generate(ctx, name, dir, 0.002)
			if err != nil {
				t.Fatal(err)
			}
			before := contents(t, dir)
			if int64(len(before)) != ds.Files {
				t.Fatalf("generated %d files, the data set says %d", len(before), ds.Files)
			}
			if err := Change(ctx, ds, 0.05, 1); err != nil {
				t.Fatal(err)
			}
			after := contents(t, dir)
			changed := 0
			for p, c := range after {
				if before[p] != c {
					changed++
				}
			}
			if changed == 0 {
				t.Fatal("Change changed nothing")
			}
			if name == "large" {
				if changed != len(before) || len(after) != len(before) {
					t.Fatalf("large: %d of %d files changed, %d files after; want every file changed in place", changed, len(before), len(after))
				}
				for p, c := range after {
					if len(c) != len(before[p]) {
						t.Fatalf("%s changed size", p)
					}
				}
			} else if changed > len(before)/10+2 {
				t.Fatalf("%d of %d files changed, want about 5 %%", changed, len(before))
			}
		})
	}
}

func contents(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMedian(t *testing.T) {
	s := func(sec int) Sample { return Sample{Wall: time.Duration(sec) * time.Second, PeakRSS: int64(sec)} }
	for _, c := range []struct {
		in   []Sample
		want time.Duration
	}{
		{nil, 0},
		{[]Sample{s(3)}, 3 * time.Second},
		{[]Sample{s(5), s(1), s(3)}, 3 * time.Second},
		{[]Sample{s(4), s(1), s(3), s(100)}, 3500 * time.Millisecond},
	} {
		if got := Median(c.in).Wall; got != c.want {
			t.Errorf("Median(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestBarChartIsWellFormedSVG(t *testing.T) {
	svg := BarChart(`a <title> & "quotes"`, "MB/s", []string{"first", "restore"}, []string{"holdfast", "kopia"}, [][]float64{{10, 250}, {0, 99.5}})
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"holdfast", "kopia", "250", "99.5", "&lt;title&gt;"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for raw, want := range map[float64]float64{0: 1, 0.7: 1, 1: 1, 1.2: 2, 3: 5, 7: 10, 45: 50, 180: 200} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%g) = %g, want %g", raw, got, want)
		}
	}
}
