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
	for _, name := range []string{"small", "large", "mixed", "many"} {
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

// TestDBChangeTouchesPagesInPlace checks the database set's change: 0.1 % of its
// 16 KiB pages rewritten in place, half spread and half near the end, nothing else.
func TestDBChangeTouchesPagesInPlace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ds, err := Generate(ctx, "db", dir, 0.01) // 102 MiB, 6,528 pages
	if err != nil {
		t.Fatal(err)
	}
	before := contents(t, dir)
	if err := Change(ctx, ds, ChangeFraction("db", 0.05), 1); err != nil {
		t.Fatal(err)
	}
	after := contents(t, dir)
	if len(after) != 1 || len(before) != 1 {
		t.Fatalf("want one file, got %d then %d", len(before), len(after))
	}
	for p, b := range before {
		a := after[p]
		if len(a) != len(b) {
			t.Fatalf("size changed: %d → %d", len(b), len(a))
		}
		pages := len(b) / dbPage
		changed, tail := 0, 0
		for i := 0; i < pages; i++ {
			if a[i*dbPage:(i+1)*dbPage] != b[i*dbPage:(i+1)*dbPage] {
				changed++
				if i >= pages-pages/50 {
					tail++
				}
			}
		}
		want := pages / 1000
		if changed < want/2 || changed > want+8 {
			t.Errorf("%d of %d pages changed, want about %d (0.1 %%)", changed, pages, want)
		}
		if tail < changed/3 {
			t.Errorf("%d of the %d changed pages are in the last 2 %%, want about half", tail, changed)
		}
	}
}

// TestTargets reads the ratios off medians: changed re-backup against each
// CLI (wall and CPU), restore against the faster CLI, the page-cache read, and the
// mover's peak RSS.
func TestTargets(t *testing.T) {
	s := func(wall, cpu float64, rss int64) []Sample {
		return []Sample{{Wall: time.Duration(wall * float64(time.Second)), CPU: time.Duration(cpu * float64(time.Second)), PeakRSS: rss << 20}}
	}
	r := SetResult{Set: "db", Bytes: 10e9, Read: 5e9, ChangeFraction: 0.001, Samples: map[string]map[Op][]Sample{
		"holdfast":        {OpChanged: s(3, 2, 100), OpRestore: s(8, 9, 300)},
		"holdfast-restic": {OpFirst: s(1, 1, 1500)},
		"kopia":           {OpChanged: s(30, 40, 200), OpRestore: s(20, 30, 400)},
		"restic":          {OpChanged: s(10, 8, 200), OpRestore: s(12, 20, 300)},
	}}
	got := map[string]Target{}
	for _, tg := range r.Targets([]string{"holdfast", "holdfast-restic", "kopia", "restic"}) {
		got[tg.What] = tg
	}
	for what, want := range map[string]struct {
		value float64
		met   bool
	}{
		// Reported beside the CLIs; the db set's target is its page-cache read.
		"0.1 % changed re-backup, wall: holdfast ÷ kopia":                               {0.1, false},
		"0.1 % changed re-backup, CPU: holdfast ÷ kopia":                                {0.05, false},
		"0.1 % changed re-backup, wall: holdfast ÷ restic":                              {0.3, false},
		"0.1 % changed re-backup, CPU: holdfast ÷ restic":                               {0.25, false},
		"0.1 % changed re-backup, wall: holdfast ÷ page-cache read of the set (2.00 s)": {1.5, true},
		"full restore, wall: holdfast ÷ the faster CLI (restic)":                        {8.0 / 12, true},
		"peak RSS of the mover, holdfast (highest op: full restore)":                    {300, false},
		"peak RSS of the mover, holdfast-restic (highest op: first backup)":             {1500, false},
	} {
		tg, ok := got[what]
		if !ok {
			t.Errorf("no row %q in %v", what, got)
			continue
		}
		if d := tg.Value - want.value; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s = %g, want %g", what, tg.Value, want.value)
		}
		if tg.Met() != want.met {
			t.Errorf("%s: met %v, want %v", what, tg.Met(), want.met)
		}
	}
	if len(got) != 8 {
		t.Errorf("%d rows, want 8: %v", len(got), got)
	}
	// On the large set the changed re-backup has a target against each CLI.
	r.Set = "large"
	for _, tg := range r.Targets([]string{"holdfast"}) {
		if strings.Contains(tg.What, "÷ kopia") && (tg.Limit != targetChanged || !tg.Met()) {
			t.Errorf("large: %+v, want the %g limit, met", tg, targetChanged)
		}
	}
	// With many small files the memory has a target.
	r.Set = "many"
	for _, tg := range r.Targets([]string{"holdfast-restic"}) {
		if strings.HasPrefix(tg.What, "peak RSS") && (tg.Limit != 1024 || tg.Met()) {
			t.Errorf("many: %+v, want a 1024 MiB limit, not met", tg)
		}
	}
}

func TestSetScale(t *testing.T) {
	for _, c := range []struct {
		in    string
		name  string
		scale Scale
		bad   bool
	}{
		{in: "large", name: "large", scale: 1},
		{in: "many@0.1", name: "many", scale: 0.1},
		{in: "db@0.4", name: "db", scale: 0.4},
		{in: "db@", bad: true},
		{in: "db@-1", bad: true},
		{in: "db@x", bad: true},
	} {
		name, scale, err := SetScale(c.in, 1)
		if c.bad {
			if err == nil {
				t.Errorf("SetScale(%q) = %q, %v; want an error", c.in, name, scale)
			}
			continue
		}
		if err != nil || name != c.name || scale != c.scale {
			t.Errorf("SetScale(%q) = %q, %v, %v; want %q, %v", c.in, name, scale, err, c.name, c.scale)
		}
	}
}
