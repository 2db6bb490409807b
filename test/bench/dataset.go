package bench

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"
)

// DataSet is a generated directory tree that every tool backs up.
type DataSet struct {
	// Name is small, large, mixed, many or db.
	Name string
	// Dir is the tree's root.
	Dir string
	// Files and Bytes count the tree as generated (before any change).
	Files, Bytes int64
}

// spec is one file to write: its path below the root, size, and whether its content
// is text-like (compressible) or random.
type spec struct {
	path string
	size int64
	text bool
}

// Scale shrinks every data set (1 = the sizes in the issue) so the bench can be
// smoke-tested in seconds.
type Scale float64

func (s Scale) n(full int) int {
	v := int(float64(full) * float64(s))
	if v < 1 {
		v = 1
	}
	return v
}

// layout returns the files of a data set at scale. All sets are deterministic.
func layout(name string, scale Scale) ([]spec, error) {
	var out []spec
	switch name {
	case "small":
		// 200,000 × 4 KiB in three levels: 20 top dirs × 100 dirs × 100 files.
		n := scale.n(200_000)
		for i := 0; i < n; i++ {
			out = append(out, spec{path: fmt.Sprintf("d%02d/d%03d/f%05d.bin", i%20, (i/20)%100, i), size: 4 << 10})
		}
	case "large":
		// 8 × 512 MiB of incompressible data.
		size := int64(scale.n(512)) << 20
		for i := 0; i < 8; i++ {
			out = append(out, spec{path: fmt.Sprintf("large-%d.bin", i), size: size})
		}
	case "mixed":
		// A volume as an application keeps it: source/config-like text, documents and
		// images, a few database-sized files. About 2.2 GiB in 20,000 files.
		r := rand.New(rand.NewPCG(7, 7))
		for i := 0; i < scale.n(16_000); i++ { // text, 1–64 KiB, log-uniform
			size := int64(1024 * (1 << r.IntN(7)))
			size += r.Int64N(size)
			out = append(out, spec{path: fmt.Sprintf("src/m%02d/p%02d/file%05d.txt", i%40, (i/40)%25, i), size: size, text: true})
		}
		for i := 0; i < scale.n(3_900); i++ { // binary, 64–512 KiB
			out = append(out, spec{path: fmt.Sprintf("media/%03d/img%05d.jpg", i%100, i), size: 64<<10 + r.Int64N(448<<10)})
		}
		for i := 0; i < scale.n(48); i++ { // 4–8 MiB blobs, half compressible
			out = append(out, spec{path: fmt.Sprintf("data/blob%03d.dat", i), size: 4<<20 + r.Int64N(4<<20), text: i%2 == 0})
		}
		for i := 0; i < 4; i++ { // database files
			out = append(out, spec{path: fmt.Sprintf("db/table%d.db", i), size: int64(scale.n(128)) << 20, text: i%2 == 1})
		}
	case "many":
		// 2,000,000 small files of 1–8 KiB of random data, 1,000 to a directory, in
		// 2,000 directories two levels deep (20 × 100): the many-small-files volume
		// whose memory cost the issue is about.
		r := rand.New(rand.NewPCG(11, 11))
		n := scale.n(2_000_000)
		for i := 0; i < n; i++ {
			dir := i / 1000
			out = append(out, spec{path: fmt.Sprintf("d%02d/d%03d/f%07d.bin", dir%20, dir/20, i), size: 1024 + r.Int64N(7*1024+1)})
		}
	case "db":
		// One 10 GiB file of random data: a database's table file, changed in place
		// (see changeDB).
		out = append(out, spec{path: "db/main.db", size: int64(scale.n(10_240)) << 20})
	default:
		return nil, fmt.Errorf("unknown data set %q (small, large, mixed, many, db)", name)
	}
	return out, nil
}

// Generate writes data set name under dir.
func Generate(ctx context.Context, name, dir string, scale Scale) (*DataSet, error) {
	specs, err := layout(name, scale)
	if err != nil {
		return nil, err
	}
	ds := &DataSet{Name: name, Dir: dir}
	for _, s := range specs {
		ds.Files++
		ds.Bytes += s.size
	}
	return ds, writeAll(ctx, dir, specs, 1)
}

// writeAll writes specs in parallel; seed makes the contents of one pass unique.
func writeAll(ctx context.Context, dir string, specs []spec, seed uint64) error {
	g, ctx := errgroup.WithContext(ctx)
	workers := runtime.NumCPU()
	for w := 0; w < workers; w++ {
		g.Go(func() error {
			r := rand.NewChaCha8(seedBytes(seed, uint64(w)))
			buf := make([]byte, 1<<20)
			for i := w; i < len(specs); i += workers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err := writeFile(filepath.Join(dir, specs[i].path), specs[i], r, buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func seedBytes(a, b uint64) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(a >> (8 * i))
		s[8+i] = byte(b >> (8 * i))
	}
	return s
}

// words makes text-like content that compresses about 3:1, like source or logs.
var words = strings.Fields("the of and to in is for on that with volume backup restore " +
	"kopia restic snapshot policy namespace pod claim node agent status error true false " +
	"func return if else struct string int64 nil err ctx config data file path size " +
	"0 1 2 3 4 5 6 7 8 9 { } ( ) : = ; , . \n \n \t")

func fill(r *rand.ChaCha8, buf []byte, text bool) {
	if !text {
		_, _ = r.Read(buf)
		return
	}
	i := 0
	for i < len(buf) {
		w := words[r.Uint64()%uint64(len(words))]
		i += copy(buf[i:], w)
		if i < len(buf) {
			buf[i] = ' '
			i++
		}
	}
}

func writeFile(path string, s spec, r *rand.ChaCha8, buf []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for left := s.size; left > 0; {
		n := min(left, int64(len(buf)))
		fill(r, buf[:n], s.text)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	return f.Close()
}

// ChangeFraction is the share of a data set changed before its changed re-backup:
// 0.1 % for the database file (a few pages of a day's writes), def for the others.
func ChangeFraction(set string, def float64) float64 {
	if set == "db" {
		return 0.001
	}
	return def
}

// dbPage is the database set's page: InnoDB's default, twice PostgreSQL's.
const dbPage = 16 << 10

// Change alters about fraction of the data set, the way a day of use does: on the
// small, mixed and many sets it rewrites that share of the files (the mixed set also
// deletes and adds a few), on the large set it overwrites that share of each file's
// bytes in place, on the db set that share of its pages (see changeDB). pass makes
// every call's new content different.
func Change(ctx context.Context, ds *DataSet, fraction float64, pass uint64) error {
	var files []string
	err := filepath.WalkDir(ds.Dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	r := rand.New(rand.NewPCG(pass, 99))
	r.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	cr := rand.NewChaCha8(seedBytes(pass, 1234))
	buf := make([]byte, 1<<20)
	if ds.Name == "db" {
		for _, p := range files {
			if err := changeDB(p, fraction, r, cr); err != nil {
				return err
			}
		}
		return nil
	}
	if ds.Name == "large" {
		for _, p := range files {
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			n := int64(float64(st.Size()) * fraction)
			off := r.Int64N(st.Size() - n + 1)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			for done := int64(0); done < n; {
				c := min(n-done, int64(len(buf)))
				fill(cr, buf[:c], false)
				if _, err := f.WriteAt(buf[:c], off+done); err != nil {
					f.Close()
					return err
				}
				done += c
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
		return nil
	}
	n := int(float64(len(files)) * fraction)
	if n < 1 {
		n = 1
	}
	var rewrite []spec
	for i, p := range files[:n] {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(ds.Dir, p)
		text := strings.HasSuffix(p, ".txt")
		if ds.Name == "mixed" && i%10 == 0 {
			// One in ten changes is a deletion plus a new file elsewhere.
			if err := os.Remove(p); err != nil {
				return err
			}
			rel = filepath.Join(filepath.Dir(rel), fmt.Sprintf("new-%d-%d.txt", pass, i))
			text = true
		}
		rewrite = append(rewrite, spec{path: rel, size: st.Size(), text: text})
	}
	return writeAll(ctx, ds.Dir, rewrite, pass+1000)
}

// changeDB overwrites fraction of the file's 16 KiB pages in place, as a day of a
// database's writes does: half of them single pages spread over the whole file (rows
// updated here and there, and the index pages above them), half in runs of four pages
// within the file's last 2 % (where new rows are appended). At 10 GiB and 0.1 % that is
// 320 single pages and 80 runs of 64 KiB: 10 MiB in 400 places.
func changeDB(path string, fraction float64, r *rand.Rand, cr *rand.ChaCha8) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	pages := st.Size() / dbPage
	n := max(int64(float64(pages)*fraction), 2)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 4*dbPage)
	write := func(page, count int64) error {
		count = min(count, pages-page)
		fill(cr, buf[:count*dbPage], false)
		_, err := f.WriteAt(buf[:count*dbPage], page*dbPage)
		return err
	}
	for i := int64(0); i < n/2; i++ {
		if err := write(r.Int64N(pages), 1); err != nil {
			f.Close()
			return err
		}
	}
	tail := max(pages/50, 1)
	for i := int64(0); i < (n-n/2+3)/4; i++ {
		if err := write(pages-tail+r.Int64N(tail), 4); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
