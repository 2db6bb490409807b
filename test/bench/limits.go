package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/kopia/kopia/repo/format"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/repo/splitter"
)

// Throughput is bytes per second.
type Throughput float64

func (t Throughput) String() string { return fmt.Sprintf("%.0f MB/s", float64(t)/1e6) }

// ReadThroughput reads every file of dir twice with one reader per CPU and returns the
// rate of each pass: the second reads from the page cache the first filled. With drop,
// the first pass starts with empty caches and reads from disk; without it, the first
// rate is not returned (0), as it reads whatever memory held.
func ReadThroughput(ctx context.Context, dir string, drop func() error) (first, cached Throughput, err error) {
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	if drop != nil {
		if err := drop(); err != nil {
			return 0, 0, err
		}
	}
	var rates [2]Throughput
	for pass := 0; pass < 2; pass++ {
		var total atomic.Int64
		var next atomic.Int64
		var firstErr atomic.Pointer[error]
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < runtime.NumCPU(); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				for ctx.Err() == nil {
					i := next.Add(1) - 1
					if i >= int64(len(files)) {
						return
					}
					n, err := readFile(files[i], buf)
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					total.Add(n)
				}
			}()
		}
		wg.Wait()
		if p := firstErr.Load(); p != nil {
			return 0, 0, *p
		}
		rates[pass] = Throughput(float64(total.Load()) / time.Since(start).Seconds())
	}
	if drop == nil {
		rates[0] = 0
	}
	return rates[0], rates[1], ctx.Err()
}

func readFile(p string, buf []byte) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		c, err := f.Read(buf)
		n += int64(c)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// AlgorithmLimits are kopia's per-byte costs, measured in this process with the kopia
// library. Pipeline is the object writer of a repository with Holdfast's format on
// memory-backed storage: splitting, hashing, encryption and packing of random data,
// everything a backup does per byte except reading the file and storing the pack.
type AlgorithmLimits struct {
	Hash, Cipher, Splitter string
	// Pipeline is one writer; PipelineParallel one writer per CPU.
	Pipeline, PipelineParallel Throughput
	// Split is the content-defined splitter alone, one goroutine.
	Split Throughput
}

// MeasureAlgorithms measures the configured kopia algorithms, keeping its repository
// in dir (use a memory-backed directory such as /dev/shm) and using size bytes of data.
func MeasureAlgorithms(ctx context.Context, dir string, size int) (AlgorithmLimits, error) {
	res := AlgorithmLimits{Hash: KopiaHash, Cipher: KopiaCipher, Splitter: KopiaSplitter}
	data := make([]byte, size)
	r := mrand.NewChaCha8(seedBytes(42, 42))
	_, _ = r.Read(data)

	write := func(workers int) (Throughput, error) {
		st, err := filesystem.New(ctx, &filesystem.Options{Path: filepath.Join(dir, fmt.Sprint("repo", workers))}, true)
		if err != nil {
			return 0, err
		}
		defer st.Close(ctx) //nolint:errcheck
		if err := repo.Initialize(ctx, st, &repo.NewRepositoryOptions{
			BlockFormat:  format.ContentFormat{Hash: KopiaHash, Encryption: KopiaCipher},
			ObjectFormat: format.ObjectFormat{Splitter: KopiaSplitter},
		}, benchPassword); err != nil {
			return 0, err
		}
		cfg := filepath.Join(dir, fmt.Sprint("repo", workers, ".config"))
		if err := repo.Connect(ctx, cfg, st, benchPassword, &repo.ConnectOptions{}); err != nil {
			return 0, err
		}
		rep, err := repo.Open(ctx, cfg, benchPassword, &repo.Options{})
		if err != nil {
			return 0, err
		}
		defer rep.Close(ctx) //nolint:errcheck
		var elapsed time.Duration
		part := len(data) / workers
		err = repo.WriteSession(ctx, rep, repo.WriteSessionOptions{Purpose: "bench"}, func(ctx context.Context, w repo.RepositoryWriter) error {
			start := time.Now()
			var wg sync.WaitGroup
			errs := make([]error, workers)
			for i := 0; i < workers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ow := w.NewObjectWriter(ctx, object.WriterOptions{})
					defer ow.Close()
					for b := data[i*part : (i+1)*part]; len(b) > 0; b = b[min(len(b), 1<<20):] {
						if _, err := ow.Write(b[:min(len(b), 1<<20)]); err != nil {
							errs[i] = err
							return
						}
					}
					_, errs[i] = ow.Result()
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if err := w.Flush(ctx); err != nil {
				return err
			}
			elapsed = time.Since(start)
			return nil
		})
		if err != nil {
			return 0, err
		}
		return Throughput(float64(part*workers) / elapsed.Seconds()), nil
	}
	var err error
	if res.Pipeline, err = write(1); err != nil {
		return res, fmt.Errorf("measuring the kopia pipeline: %w", err)
	}
	if res.PipelineParallel, err = write(runtime.NumCPU()); err != nil {
		return res, fmt.Errorf("measuring the kopia pipeline: %w", err)
	}

	sp := splitter.GetFactory(KopiaSplitter)()
	defer sp.Close()
	start := time.Now()
	for b := data; len(b) > 0; {
		n := sp.NextSplitPoint(b)
		if n < 0 {
			break
		}
		b = b[n:]
	}
	res.Split = Throughput(float64(len(data)) / time.Since(start).Seconds())
	return res, nil
}
