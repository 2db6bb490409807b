package bench

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Median of the samples, field by field.
func Median(samples []Sample) Sample {
	if len(samples) == 0 {
		return Sample{}
	}
	pick := func(f func(Sample) int64) int64 {
		v := make([]int64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Sample{
		Wall:    time.Duration(pick(func(s Sample) int64 { return int64(s.Wall) })),
		CPU:     time.Duration(pick(func(s Sample) int64 { return int64(s.CPU) })),
		PeakRSS: pick(func(s Sample) int64 { return s.PeakRSS }),
	}
}

func secs(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// Markdown renders one table per data set: the median wall time, CPU time and peak
// RSS of every tool and operation, and Holdfast's wall-time ratio to each CLI
// (below 1.00 is faster than the CLI).
func Markdown(results []SetResult, tools []string, repeat int) string {
	var b strings.Builder
	for _, r := range results {
		read := "page-cache read " + r.Read.String()
		if r.DiskRead > 0 {
			read += ", from disk " + r.DiskRead.String()
		}
		if r.Read > 0 {
			read += fmt.Sprintf(", %s for the whole set", secs(r.ReadTime()))
		}
		scale := ""
		if r.Scale != 0 {
			scale = fmt.Sprintf(" at scale %g", r.Scale)
		}
		fmt.Fprintf(&b, "#### %s%s: %d files, %.2f GiB (%s; median of %d)\n\n", r.Set, scale, r.Files, float64(r.Bytes)/(1<<30), read, repeat)
		b.WriteString("| operation | tool | wall | MB/s | CPU (user+sys) | peak RSS |")
		ratios := []string{}
		if slices.Contains(tools, "holdfast") {
			for _, t := range tools {
				if t == "kopia" || t == "restic" {
					ratios = append(ratios, t)
					fmt.Fprintf(&b, " holdfast ÷ %s |", t)
				}
			}
		}
		b.WriteString("\n|---|---|---:|---:|---:|---:|" + strings.Repeat("---:|", len(ratios)) + "\n")
		for _, op := range Ops {
			for _, t := range tools {
				m := Median(r.Samples[t][op])
				fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s | %d MiB |", r.opLabel(op), t, secs(m.Wall), float64(r.Bytes)/1e6/m.Wall.Seconds(), secs(m.CPU), m.PeakRSS>>20)
				for _, c := range ratios {
					if t != "holdfast" {
						b.WriteString(" |")
						continue
					}
					cli := Median(r.Samples[c][op])
					fmt.Fprintf(&b, " %.2f |", m.Wall.Seconds()/cli.Wall.Seconds())
				}
				b.WriteString("\n")
			}
		}
		b.WriteString("\n")
		b.WriteString(targetsMarkdown(r.Targets(tools)))
	}
	return b.String()
}

// ReadTime is how long reading the whole data set from the page cache took: the
// floor of any backup that reads every byte.
func (r SetResult) ReadTime() time.Duration {
	if r.Read <= 0 {
		return 0
	}
	return time.Duration(float64(r.Bytes) / float64(r.Read) * float64(time.Second))
}

// opLabel names op as the data set ran it: the changed re-backup with the share that
// changed.
func (r SetResult) opLabel(op Op) string {
	if op == OpChanged && r.ChangeFraction > 0 {
		return fmt.Sprintf("%g %% changed re-backup", r.ChangeFraction*100)
	}
	return string(op)
}

// Target is one claim of the issue read off a data set's medians.
type Target struct {
	// What is measured, e.g. "5 % changed re-backup, wall: holdfast ÷ kopia".
	What string
	// Value is the measured ratio (or MiB for memory).
	Value float64
	// Limit is the target: Value must be at most Limit. 0: reported, no target.
	Limit float64
	// Unit is "" for ratios, "MiB" for memory.
	Unit string
}

// Met says whether the target is met; false when there is none.
func (t Target) Met() bool { return t.Limit > 0 && t.Value <= t.Limit }

// The targets (issue 21): the changed re-backup of a large file ≥ 5× faster
// and 5× less CPU than each CLI, the database's 0.1 %-changed re-backup under twice
// its page-cache read, every restore ≤ 0.8 × the faster CLI, and the mover's peak
// RSS under 1 GiB with many small files.
const (
	targetChanged      = 0.2
	targetDBRead       = 2
	targetRestore      = 0.8
	targetManyRSSBytes = 1 << 30
)

// Targets reads the claims off r's medians: ratios of Holdfast to the CLIs
// for the changed re-backup (wall and CPU) and the restore, the changed re-backup
// against the page-cache read, and the peak RSS of every Holdfast tool. Rows whose
// tools were not measured are left out; a row without a target is reported only.
func (r SetResult) Targets(tools []string) []Target {
	med := func(tool string, op Op) (Sample, bool) {
		s := r.Samples[tool][op]
		return Median(s), len(s) > 0
	}
	var out []Target
	hf, ok := med("holdfast", OpChanged)
	changedLimit := 0.0
	if r.Set == "large" { // the db set's target is its page-cache read (below)
		changedLimit = targetChanged
	}
	if ok {
		for _, cli := range []string{"kopia", "restic"} {
			c, ok := med(cli, OpChanged)
			if !ok || c.Wall <= 0 || c.CPU <= 0 {
				continue
			}
			label := r.opLabel(OpChanged)
			out = append(out,
				Target{What: fmt.Sprintf("%s, wall: holdfast ÷ %s", label, cli), Value: hf.Wall.Seconds() / c.Wall.Seconds(), Limit: changedLimit},
				Target{What: fmt.Sprintf("%s, CPU: holdfast ÷ %s", label, cli), Value: hf.CPU.Seconds() / c.CPU.Seconds(), Limit: changedLimit})
		}
		if r.Read > 0 {
			limit := 0.0
			if r.Set == "db" {
				limit = targetDBRead
			}
			out = append(out, Target{What: fmt.Sprintf("%s, wall: holdfast ÷ page-cache read of the set (%s)", r.opLabel(OpChanged), secs(r.ReadTime())),
				Value: hf.Wall.Seconds() / r.ReadTime().Seconds(), Limit: limit})
		}
	}
	if hr, ok := med("holdfast", OpRestore); ok {
		var best time.Duration
		var bestName string
		for _, cli := range []string{"kopia", "restic"} {
			if c, ok := med(cli, OpRestore); ok && c.Wall > 0 && (best == 0 || c.Wall < best) {
				best, bestName = c.Wall, cli
			}
		}
		if best > 0 {
			out = append(out, Target{What: fmt.Sprintf("full restore, wall: holdfast ÷ the faster CLI (%s)", bestName),
				Value: hr.Wall.Seconds() / best.Seconds(), Limit: targetRestore})
		}
	}
	for _, t := range tools {
		if !strings.HasPrefix(t, "holdfast") {
			continue
		}
		var peak int64
		var at Op
		for _, op := range Ops {
			if m, ok := med(t, op); ok && m.PeakRSS > peak {
				peak, at = m.PeakRSS, op
			}
		}
		if peak == 0 {
			continue
		}
		limit := 0.0
		if r.Set == "many" {
			limit = targetManyRSSBytes >> 20
		}
		out = append(out, Target{What: fmt.Sprintf("peak RSS of the mover, %s (highest op: %s)", t, r.opLabel(at)),
			Value: float64(peak >> 20), Limit: limit, Unit: "MiB"})
	}
	return out
}

func targetsMarkdown(targets []Target) string {
	if len(targets) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| against the targets | measured | target | |\n|---|---:|---:|---|\n")
	for _, t := range targets {
		value, limit := fmt.Sprintf("%.2f", t.Value), "—"
		if t.Unit != "" {
			value = fmt.Sprintf("%.0f %s", t.Value, t.Unit)
		}
		if t.Limit > 0 {
			limit = "≤ " + fmt.Sprintf("%.2f", t.Limit)
			if t.Unit != "" {
				limit = fmt.Sprintf("< %.0f %s", t.Limit, t.Unit)
			}
		}
		mark := ""
		switch {
		case t.Limit == 0:
		case t.Met():
			mark = "met"
		default:
			mark = "not met"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, value, limit, mark)
	}
	b.WriteString("\n")
	return b.String()
}

// Charts writes two SVG bar charts per data set into dir: throughput (data set size
// over median wall time) and peak RSS, Holdfast beside each CLI.
func Charts(dir string, results []SetResult, tools []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, r := range results {
		// The unchanged re-backup's effective rate (size over a fraction of a second)
		// would flatten every other bar, so the throughput chart leaves it out.
		var groups, tpGroups []string
		for _, op := range Ops {
			groups = append(groups, r.opLabel(op))
			if op != OpUnchanged {
				tpGroups = append(tpGroups, r.opLabel(op))
			}
		}
		tp := make([][]float64, len(tools))
		mem := make([][]float64, len(tools))
		for i, t := range tools {
			for _, op := range Ops {
				m := Median(r.Samples[t][op])
				if op != OpUnchanged {
					tp[i] = append(tp[i], float64(r.Bytes)/1e6/m.Wall.Seconds())
				}
				mem[i] = append(mem[i], float64(m.PeakRSS)/(1<<20))
			}
		}
		size := fmt.Sprintf("%d files, %.2f GiB", r.Files, float64(r.Bytes)/(1<<30))
		for _, c := range []struct {
			name, title, unit string
			groups            []string
			values            [][]float64
		}{
			{r.Set + "-throughput.svg", fmt.Sprintf("%s data set (%s): throughput, higher is better", r.Set, size), "MB/s", tpGroups, tp},
			{r.Set + "-memory.svg", fmt.Sprintf("%s data set (%s): peak RSS, lower is better", r.Set, size), "MiB", groups, mem},
		} {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, []byte(BarChart(c.title, c.unit, c.groups, tools, c.values)), 0o644); err != nil {
				return written, err
			}
			written = append(written, p)
		}
	}
	return written, nil
}

var palette = []string{"#1f6feb", "#d29922", "#8250df", "#2da44e", "#cf222e"}

// BarChart draws a grouped bar chart: one group per label in groups, one bar per
// series in each group, values[series][group], with the value printed on each bar.
func BarChart(title, unit string, groups, series []string, values [][]float64) string {
	const (
		width, height        = 760, 360
		left, right, top, bo = 60, 20, 50, 60
	)
	maxV := 0.0
	for _, s := range values {
		for _, v := range s {
			maxV = max(maxV, v)
		}
	}
	step := niceStep(maxV / 5)
	top5 := step * float64(int(maxV/step)+1)
	plotW, plotH := float64(width-left-right), float64(height-top-bo)
	y := func(v float64) float64 { return float64(top) + plotH*(1-v/top5) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	for v := 0.0; v <= top5+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, width-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", top+int(plotH/2), top+int(plotH/2), html.EscapeString(unit))
	gw := plotW / float64(len(groups))
	bw := gw * 0.8 / float64(len(series))
	for g, name := range groups {
		x0 := float64(left) + gw*float64(g) + gw*0.1
		for s := range series {
			v := values[s][g]
			x := x0 + bw*float64(s)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.1f %s</title></rect>`,
				x, y(v), bw-2, y(0)-y(v), palette[s%len(palette)], html.EscapeString(series[s]), html.EscapeString(name), v, html.EscapeString(unit))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", x+bw/2-1, y(v)-3, short(v))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x0+gw*0.4, height-bo+16, html.EscapeString(name))
	}
	lx := float64(left)
	for s, name := range series {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="12" height="12" fill="%s"/><text x="%.1f" y="%d">%s</text>`+"\n", lx, height-22, palette[s%len(palette)], lx+16, height-12, html.EscapeString(name))
		lx += 40 + 8*float64(len(name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func short(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := 1.0
	for p*10 <= raw {
		p *= 10
	}
	for p > raw {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
