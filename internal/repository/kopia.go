package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/kopia/kopia/repo/blob/s3"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/format"
	"github.com/kopia/kopia/repo/maintenance"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/snapshotfs"
	"github.com/kopia/kopia/snapshot/snapshotmaintenance"
	"github.com/kopia/kopia/snapshot/upload"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// kopiaTagPrefix marks user tags among a kopia manifest's labels, as the kopia CLI does.
const kopiaTagPrefix = "tag:"

type kopiaRepository struct {
	cfg        Config
	rep        repo.DirectRepository
	configFile string

	// fatal is set by kopia's OnFatalError: the repository must be reopened.
	fatal atomic.Pointer[error]
	mu    sync.Mutex // one write session at a time keeps progress and flushes simple
}

func kopiaStorage(ctx context.Context, cfg Config, create bool) (blob.Storage, error) {
	st := cfg.Store
	if st.Filesystem != nil {
		p := filepath.Join(st.Filesystem.Path, cfg.location())
		if create {
			if err := makeSharedDir(p); err != nil {
				return nil, classify(err, st)
			}
		} else if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			// The store is there but this namespace's repository is not yet: kopia
			// would fail on the missing directory, which reads as an unreachable store.
			if _, rootErr := os.Stat(st.Filesystem.Path); rootErr == nil {
				return nil, newError(ErrNotInitialized, fmt.Sprintf("No kopia repository exists at %s yet", cfg.URL()), err)
			}
		}
		s, err := filesystem.New(ctx, &filesystem.Options{Path: p, FileMode: sharedFileMode, DirectoryMode: sharedDirMode.Perm()}, create)
		return s, classify(err, st)
	}
	s, err := s3.New(ctx, &s3.Options{
		BucketName:      st.S3.Bucket,
		Prefix:          st.S3.key(cfg.location()) + "/",
		Endpoint:        st.S3.Endpoint,
		DoNotUseTLS:     st.S3.Insecure,
		RootCA:          st.S3.CABundle,
		AccessKeyID:     st.S3.AccessKeyID,
		SecretAccessKey: st.S3.SecretAccessKey,
		SessionToken:    st.S3.SessionToken,
		Region:          st.S3.Region,
	}, create)
	return s, classify(err, st)
}

func initializeKopia(ctx context.Context, cfg Config) error {
	st, err := kopiaStorage(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer st.Close(ctx) //nolint:errcheck
	if err := repo.Initialize(ctx, st, &repo.NewRepositoryOptions{}, cfg.Password); err != nil {
		if errors.Is(err, repo.ErrAlreadyInitialized) {
			return newError(ErrExistingData, fmt.Sprintf("A kopia repository already exists at %s; Holdfast does not initialise over it", cfg.URL()), err)
		}
		return classify(fmt.Errorf("initialising the kopia repository at %s: %w", cfg.URL(), err), cfg.Store)
	}
	r, err := openKopia(ctx, cfg)
	if err != nil {
		return err
	}
	defer r.Close(ctx) //nolint:errcheck
	return r.setup(ctx)
}

// setup makes this client the maintenance owner and stores a global policy that keeps
// every snapshot: Holdfast owns retention, and the kopia default (latest 10, ...)
// would delete snapshots if anyone ever applied it, for example the kopia CLI.
func (r *kopiaRepository) setup(ctx context.Context) error {
	return repo.WriteSession(ctx, r.rep, repo.WriteSessionOptions{Purpose: "holdfast setup"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		params := maintenance.DefaultParams()
		params.Owner = r.cfg.owner()
		if err := maintenance.SetParams(ctx, w, &params); err != nil {
			return fmt.Errorf("setting the maintenance owner: %w", err)
		}
		global := *policy.DefaultPolicy
		keep := policy.OptionalInt(math.MaxInt32)
		global.RetentionPolicy = policy.RetentionPolicy{
			KeepLatest: &keep, KeepHourly: &keep, KeepDaily: &keep,
			KeepWeekly: &keep, KeepMonthly: &keep, KeepAnnual: &keep,
		}
		if err := policy.SetPolicy(ctx, w, policy.GlobalPolicySourceInfo, &global); err != nil {
			return fmt.Errorf("storing the keep-everything policy: %w", err)
		}
		return nil
	})
}

func openKopia(ctx context.Context, cfg Config) (*kopiaRepository, error) {
	dir, err := cfg.privateDir()
	if err != nil {
		return nil, err
	}
	st, err := kopiaStorage(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "repository.config")
	cacheDir := cfg.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(dir, "cache")
	}
	err = writeKopiaConfig(ctx, cfg, st, configFile, cacheDir)
	_ = st.Close(ctx)
	if err != nil {
		_ = os.Remove(configFile)
		return nil, kopiaOpenError(err, cfg)
	}
	r := &kopiaRepository{cfg: cfg, configFile: configFile}
	rep, err := repo.Open(ctx, configFile, cfg.Password, &repo.Options{
		OnFatalError: func(err error) {
			// kopia's default exits the process; the manager and agent outlive one repository.
			ctrl.Log.WithName("repository").Error(err, "kopia reported a fatal repository error", "url", cfg.URL())
			r.fatal.Store(&err)
		},
	})
	if err != nil {
		_ = os.Remove(configFile)
		return nil, kopiaOpenError(err, cfg)
	}
	dr, ok := rep.(repo.DirectRepository)
	if !ok {
		_ = rep.Close(ctx)
		return nil, errors.New("kopia opened a non-direct repository")
	}
	r.rep = dr
	return r, nil
}

// writeKopiaConfig writes the config file that repo.Connect would write, so that the
// repository is opened with one key derivation instead of two: Connect verifies the
// password with a full Open (scrypt: ~140 ms of CPU and 64 MiB here) and the Open
// that follows derives the key again. Every data-mover job opens its repository, so
// this was a fixed cost of every backup and restore (make bench: an unchanged
// re-backup took twice as long as the kopia CLI's). A wrong key still fails in
// repo.Open with repo.ErrInvalidPassword.
func writeKopiaConfig(ctx context.Context, cfg Config, st blob.Storage, configFile, cacheDir string) error {
	if _, err := st.GetMetadata(ctx, format.KopiaRepositoryBlobID); err != nil {
		if errors.Is(err, blob.ErrBlobNotFound) {
			return repo.ErrRepositoryNotInitialized
		}
		return fmt.Errorf("reading the kopia repository format: %w", err)
	}
	user, host, _ := strings.Cut(cfg.owner(), "@")
	size := cfg.cacheSize()
	ci := st.ConnectionInfo()
	lc := repo.LocalConfig{
		Storage: &ci,
		Caching: &content.CachingOptions{
			CacheDirectory:              cacheDir,
			ContentCacheSizeBytes:       size,
			ContentCacheSizeLimitBytes:  size,
			MetadataCacheSizeBytes:      size,
			MetadataCacheSizeLimitBytes: size,
		},
		ClientOptions: repo.ClientOptions{Hostname: host, Username: user, Description: cfg.URL()}.ApplyDefaults(ctx, cfg.URL()),
	}
	raw, err := json.MarshalIndent(lc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(configFile, raw, 0o600)
}

func kopiaOpenError(err error, cfg Config) error {
	switch {
	case errors.Is(err, repo.ErrInvalidPassword):
		return newError(ErrWrongKey, fmt.Sprintf("The kopia repository at %s cannot be opened with this repository's key: the key Secret was replaced, or the data belongs to another repository; restore the original key Secret", cfg.URL()), err)
	case errors.Is(err, repo.ErrRepositoryNotInitialized):
		return newError(ErrNotInitialized, fmt.Sprintf("No kopia repository exists at %s yet", cfg.URL()), err)
	}
	if c := classify(err, cfg.Store); c != err {
		return c
	}
	return newError(ErrDamaged, fmt.Sprintf("The kopia repository at %s is damaged or unreadable: %v", cfg.URL(), oneLine(err)), err)
}

func (r *kopiaRepository) URL() string { return r.cfg.URL() }

// check fails when kopia reported a fatal error, and otherwise refreshes the
// repository's view: other clients (agents, the manager) write snapshots after this
// one opened it, and a stale view would miss a parent or a snapshot to delete.
func (r *kopiaRepository) check(ctx context.Context) error {
	if p := r.fatal.Load(); p != nil {
		return newError(ErrDamaged, fmt.Sprintf("The kopia repository at %s reported a fatal error and must be reopened: %v", r.URL(), oneLine(*p)), *p)
	}
	if err := r.rep.Refresh(ctx); err != nil {
		return classify(fmt.Errorf("refreshing the kopia repository at %s: %w", r.URL(), err), r.cfg.Store)
	}
	return nil
}

func (r *kopiaRepository) source(sourcePath string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: SnapshotHost, UserName: r.cfg.Namespace, Path: sourcePath}
}

func (r *kopiaRepository) Backup(ctx context.Context, req BackupRequest) (BackupResult, error) {
	if err := r.check(ctx); err != nil {
		return BackupResult{}, err
	}
	if err := checkTags(req.Tags); err != nil {
		return BackupResult{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	skips := &skipCounter{}
	meta, err := volumeMetadata(req.Dir, req.ExcludeCaches)
	if err != nil {
		return BackupResult{}, err
	}
	if afterMetadata != nil {
		afterMetadata(req.Dir)
	}
	// Not the policy stored in the repository: see backupPolicy.
	pol := backupPolicy()
	reuse, err := newReuser(r.rep, req.Dir, pol)
	if err != nil {
		return BackupResult{}, err
	}
	entry, err := volumeRoot(req.Dir, skips, meta, reuse)
	if err != nil {
		return BackupResult{}, fmt.Errorf("reading %s: %w", req.Dir, err)
	}
	si := r.source(req.SourcePath)
	var res BackupResult
	prog := &kopiaProgress{skips: skips}
	prog.EstimatedDataSize(meta.regularFiles+int64(len(meta.files)), meta.regularBytes+meta.bytes)
	stop := publish(ctx, req.Progress, prog.snapshot)
	defer stop()
	err = repo.WriteSession(ctx, r.rep, repo.WriteSessionOptions{Purpose: "holdfast backup", OnUpload: prog.UploadedBytes}, func(ctx context.Context, w repo.RepositoryWriter) error {
		previous, err := snapshot.FindPreviousManifests(ctx, w, si, nil)
		if err != nil {
			return fmt.Errorf("finding the previous snapshot: %w", err)
		}
		parent, err := chooseKopiaParent(ctx, w, si, previous, req.Parent)
		if err != nil {
			return err
		}
		var parents []*snapshot.Manifest
		if parent != nil {
			res.ParentSnapshotID = string(parent.ID)
			parents = []*snapshot.Manifest{parent}
		}
		reuse.begin(ctx, w, parent, prog.HashedBytes)
		tree := policy.BuildTree(nil, pol)
		u := upload.NewUploader(w)
		u.ParallelUploads = uploadParallelism(uploadCPUs())
		u.Progress = prog
		// With backupPolicy kopia ignores every entry's read error; prog.Error
		// cancels the upload on the first one a live volume does not explain.
		prog.cancel = u.Cancel
		stopCancel := context.AfterFunc(ctx, u.Cancel)
		defer stopCancel()
		flusher := startIndexFlusher(ctx, w, indexFlushFiles, u.Cancel)
		defer flusher.stop()
		prog.flusher = flusher
		man, err := u.Upload(ctx, entry, tree, si, parents...)
		if ferr := flusher.stop(); ferr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("writing the index of what the backup of %s has stored so far: %w", req.Dir, ferr)
		}
		if err != nil {
			return err
		}
		if man.IncompleteReason != "" {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failed := prog.failures(); failed != "" {
				return fmt.Errorf("the snapshot of %s is incomplete: %s", req.Dir, failed)
			}
			return fmt.Errorf("the snapshot of %s is incomplete: %s", req.Dir, man.IncompleteReason)
		}
		if err := reuse.finish(ctx, w, man); err != nil {
			return fmt.Errorf("storing the chunk fingerprints of the large files: %w", err)
		}
		man.Tags = map[string]string{}
		for k, v := range req.Tags {
			man.Tags[kopiaTagPrefix+k] = v
		}
		id, err := snapshot.SaveSnapshot(ctx, w, man)
		if err != nil {
			return err
		}
		res.SnapshotID = string(id)
		res.TotalBytes = man.Stats.TotalFileSize
		// kopia counts the files it finds unchanged since the previous snapshot
		// (CachedFiles) apart from those it reads (TotalFileCount); their bytes are in
		// TotalFileSize either way.
		res.TotalFiles = int64(man.Stats.TotalFileCount) + int64(man.Stats.CachedFiles)
		// Holdfast's own files are not files of the volume.
		res.TotalBytes -= meta.bytes
		res.TotalFiles -= int64(len(meta.files))
		res.Skipped = skips.result()
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return BackupResult{}, ctx.Err()
		}
		return BackupResult{}, classify(err, r.cfg.Store)
	}
	res.BytesUploaded = prog.uploaded.Load()
	res.BytesReused = reuse.reused.Load()
	stop()
	if req.Progress != nil {
		req.Progress(Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes, FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles})
	}
	return res, nil
}

// chooseKopiaParent picks the manifest a backup is incremental to (see
// BackupRequest.Parent): the newest complete one of the source's previous manifests,
// none, or the named snapshot when it is a complete snapshot of this source.
func chooseKopiaParent(ctx context.Context, rep repo.Repository, si snapshot.SourceInfo, previous []*snapshot.Manifest, want string) (*snapshot.Manifest, error) {
	switch want {
	case NoParent:
		return nil, nil
	case "":
		var parent *snapshot.Manifest
		for _, m := range previous {
			if m.IncompleteReason == "" && (parent == nil || m.StartTime.After(parent.StartTime)) {
				parent = m
			}
		}
		return parent, nil
	}
	m, err := snapshot.LoadSnapshot(ctx, rep, manifest.ID(want))
	switch {
	case errors.Is(err, snapshot.ErrSnapshotNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("loading the parent snapshot %s: %w", want, err)
	case m.Source != si || m.IncompleteReason != "":
		return nil, nil
	}
	return m, nil
}

// indexFlushFiles is how many files a kopia backup finishes between two flushes of its
// write session. Until a flush, kopia holds the index entry of every content the session
// wrote in the Go heap (about 170 bytes each), and it flushes by itself only after ten
// minutes of writing or at an upload checkpoint. Holdfast takes no checkpoints: kopia's
// also apply the source's retention policy in the middle of the backup. A flush writes
// the pending packs and an index blob and empties the builder; the index blobs written
// are then read from the memory-mapped files of Holdfast's cache directory, not from
// the heap.
//
// Why 100,000: it holds the entries to about 17 MB, well below the rest of the upload's
// live heap (the packs being filled and the compressors, about 65 MB), and costs one
// index blob of a few MB per 100,000 files, 20 for 2,000,000 files, which maintenance
// compacts. Measured on first backups of 1-8 KiB files with GOMAXPROCS=2, the peak heap
// in use was 264-276 MiB without flushing and 165-180 MiB with it at 300,000 files, 420-428
// MiB against 172-174 MiB at 600,000, in the same time; flushing every 50,000 files
// saved another 20 MiB for twice the index blobs.
//
// Contents flushed by a backup that then fails belong to no snapshot, as those of
// kopia's own checkpoints: maintenance deletes them once kopia's safety margins have
// passed. A variable so that a test can lower it.
var indexFlushFiles int64 = 100_000

// indexFlusher flushes a kopia write session every `every` finished files in a
// goroutine of its own, so that the upload's workers, which count the files, only
// signal it. kopia flushes a session while its writers run in the same way (its
// checkpoints and its ten-minute flush).
type indexFlusher struct {
	every int64
	// kick has room for one flush: the signals of files that finish while a flush
	// runs make one more flush, not one each.
	kick     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// err is the failed flush's error, set before done is closed.
	err error
}

// startIndexFlusher starts the flushing goroutine; on a failed flush it calls abort
// (which cancels the upload) and flushes no more.
func startIndexFlusher(ctx context.Context, w repo.RepositoryWriter, every int64, abort func()) *indexFlusher {
	f := &indexFlusher{every: every, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-f.quit:
				return
			case <-f.kick:
				if err := w.Flush(ctx); err != nil {
					f.err = err
					abort()
					return
				}
			}
		}
	}()
	return f
}

// finished is told that the upload has finished n files.
func (f *indexFlusher) finished(n int64) {
	if n%f.every != 0 {
		return
	}
	select {
	case f.kick <- struct{}{}:
	default: // a flush is due already
	}
}

// stop ends the goroutine, waiting for a flush in progress, and returns the error of a
// failed flush. It may be called more than once.
func (f *indexFlusher) stop() error {
	f.stopOnce.Do(func() { close(f.quit) })
	<-f.done
	return f.err
}

// kopiaProgress counts with atomics: the uploader calls it from many goroutines.
type kopiaProgress struct {
	upload.NullUploadProgress
	hashed, uploaded, files, totalBytes, totalFiles atomic.Int64
	skips                                           *skipCounter
	// cancel stops the upload (set once the uploader exists).
	cancel func()
	// flusher flushes the write session's index as files finish (set once the
	// uploader exists).
	flusher *indexFlusher

	mu sync.Mutex
	// failed are the first entries kopia could not read, "path: error".
	failed []string
}

// maxReportedFailures bounds what a failed backup's message lists.
const maxReportedFailures = 3

// Error counts an entry that vanished or changed its type while the backup read it,
// and for any other error records the entry, so that the failed backup names it, and
// cancels the upload.
func (p *kopiaProgress) Error(path string, err error, _ bool) {
	switch {
	case errors.Is(err, os.ErrNotExist):
		p.skips.vanished.Add(1)
		return
	case errors.Is(err, errChangedType):
		p.skips.changedType.Add(1)
		return
	}
	p.mu.Lock()
	if len(p.failed) < maxReportedFailures {
		p.failed = append(p.failed, fmt.Sprintf("cannot read %s: %v", path, err))
	}
	p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
}

func (p *kopiaProgress) failures() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.failed, "; ")
}

// Enabled is false only so that kopia does not estimate the upload's size by walking
// the volume again: volumeMetadata has counted it (Backup sets the totals). kopia asks
// it for nothing else; every other callback is still called. On 200,000 files the
// estimate was a fifth of an unchanged re-backup's CPU.
func (p *kopiaProgress) Enabled() bool                { return false }
func (p *kopiaProgress) HashedBytes(n int64)          { p.hashed.Add(n) }
func (p *kopiaProgress) CachedFile(_ string, n int64) { p.hashed.Add(n) }
func (p *kopiaProgress) UploadedBytes(n int64)        { p.uploaded.Add(n) }
func (p *kopiaProgress) FinishedFile(string, error) {
	n := p.files.Add(1)
	if p.flusher != nil {
		p.flusher.finished(n)
	}
}
func (p *kopiaProgress) EstimatedDataSize(files, bytes int64) {
	p.totalFiles.Store(files)
	p.totalBytes.Store(bytes)
}
func (p *kopiaProgress) EstimationParameters() upload.EstimationParameters {
	return upload.EstimationParameters{Type: upload.EstimationTypeClassic}
}

func (p *kopiaProgress) snapshot() Progress {
	return Progress{BytesDone: p.hashed.Load(), TotalBytes: p.totalBytes.Load(), FilesDone: p.files.Load(), TotalFiles: p.totalFiles.Load()}
}

// publish calls fn with get() every ProgressInterval until the returned stop is called
// (stop may be called more than once).
func publish(ctx context.Context, fn func(Progress), get func() Progress) (stop func()) {
	if fn == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				fn(get())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-finished }) }
}

func (r *kopiaRepository) Restore(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	if err := r.check(ctx); err != nil {
		return RestoreResult{}, err
	}
	man, err := snapshot.LoadSnapshot(ctx, r.rep, manifest.ID(req.SnapshotID))
	if err != nil {
		if errors.Is(err, snapshot.ErrSnapshotNotFound) {
			return RestoreResult{}, newError(ErrSnapshotNotFound, fmt.Sprintf("Snapshot %s does not exist in %s", req.SnapshotID, r.URL()), err)
		}
		return RestoreResult{}, classify(err, r.cfg.Store)
	}
	if man.Source.UserName != r.cfg.Namespace {
		return RestoreResult{}, newError(ErrSnapshotNotFound, fmt.Sprintf("Snapshot %s does not belong to namespace %s", req.SnapshotID, r.cfg.Namespace), nil)
	}
	root, err := snapshotfs.SnapshotRoot(r.rep, man)
	if err != nil {
		return RestoreResult{}, err
	}
	// Every entry goes through confinedfs: kopia's own output would follow names and
	// symlinks out of the target.
	var entry fs.Entry = root
	if len(req.Paths) > 0 {
		dir, ok := root.(fs.Directory)
		if !ok {
			return RestoreResult{}, &kopiarestore.PathNotInSnapshotError{Path: req.Paths[0], Snapshot: req.SnapshotID}
		}
		if entry, err = kopiarestore.Subtrees(ctx, dir, req.SnapshotID, req.Paths); err != nil {
			return RestoreResult{}, err
		}
	}
	if restoreRoot != nil {
		entry = restoreRoot(entry)
	}
	w, err := openTarget(req)
	if err != nil {
		return RestoreResult{}, err
	}
	defer w.Close()
	direct := kopiarestore.NewDirectReads(r.rep, func(ctx context.Context) (blob.Storage, error) {
		return kopiaStorage(ctx, r.cfg, false)
	})
	defer func() {
		log := ctrl.Log.WithName("repository")
		if err := direct.Err(); err != nil {
			log.Info("the restore read every file through kopia's cache", "url", r.URL(), "reason", err.Error())
		}
		if err := direct.Close(context.WithoutCancel(ctx)); err != nil {
			log.Error(err, "closing the uncached reader of a restore", "url", r.URL())
		}
	}()
	var special map[string][]kopiarestore.Special
	if err := readHoldfastFile(ctx, root, kopiarestore.SpecialName, func(rd io.Reader) (err error) {
		special, err = kopiarestore.ReadSpecial(rd)
		return err
	}); err != nil {
		return RestoreResult{}, err
	}
	var links map[string]int
	if err := readHoldfastFile(ctx, root, kopiarestore.LinksName, func(rd io.Reader) (err error) {
		links, err = kopiarestore.ReadLinks(rd)
		return err
	}); err != nil {
		return RestoreResult{}, err
	}
	out := kopiarestore.New(w).WithPackPrefetch(r.rep, r.cfg.cacheSize()).WithDirectReads(direct).WithDirectoryTimes(r.rep).
		WithSpecialFiles(kopiarestore.SpecialUnder(special, req.Paths)).WithHardLinks(links)
	var last atomic.Pointer[kopiarestore.Stats]
	stop := publish(ctx, req.Progress, func() Progress {
		s := last.Load()
		if s == nil {
			return Progress{}
		}
		return Progress{BytesDone: s.Bytes, TotalBytes: s.TotalBytes, FilesDone: s.Files, TotalFiles: s.TotalFiles}
	})
	defer stop()
	// Not the kopia CLI's 8 workers: more workers creating files in the same
	// directory spend their CPU spinning on the directory's lock in the kernel.
	stats, err := kopiarestore.Restore(ctx, out, entry, 4, func(s kopiarestore.Stats) { last.Store(&s) })
	if ctx.Err() != nil {
		return RestoreResult{}, ctx.Err()
	}
	if err != nil {
		return RestoreResult{}, classify(err, r.cfg.Store)
	}
	stop()
	res := RestoreResult{TotalBytes: stats.Bytes, TotalFiles: stats.Files,
		NotRestored: NotRestored{Attributes: out.AttributesRefused()}}
	files, bytes := out.HoldfastFiles() // not files of the volume
	res.TotalFiles -= files
	res.TotalBytes -= bytes
	res.NotRestored.Devices = out.DevicesNotRestored()
	if req.Progress != nil {
		req.Progress(Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes, FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles})
	}
	return res, nil
}

// restoreRoot, when set by a test, stands in for the entry a kopia restore walks.
var restoreRoot func(fs.Entry) fs.Entry

// readHoldfastFile reads Holdfast's file name at the snapshot's root with read, before
// the restore (the list of special files: each is made with its directory, before the
// directory's time is set; the hard links: any name may be reached first). Nothing is
// read when the snapshot has no such file.
func readHoldfastFile(ctx context.Context, root fs.Entry, name string, read func(io.Reader) error) error {
	dir, ok := root.(fs.Directory)
	if !ok {
		return nil
	}
	e, err := dir.Child(ctx, name)
	if errors.Is(err, fs.ErrEntryNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking for the snapshot's %s: %w", name, err)
	}
	f, ok := e.(fs.File)
	if !ok {
		return nil
	}
	rd, err := f.Open(ctx)
	if err != nil {
		return fmt.Errorf("reading the snapshot's %s: %w", name, err)
	}
	defer rd.Close()
	if err := read(rd); err != nil {
		return fmt.Errorf("reading the snapshot's %s: %w", name, err)
	}
	return nil
}

func (r *kopiaRepository) Snapshots(ctx context.Context, sourcePath string) ([]Snapshot, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	var sources []snapshot.SourceInfo
	if sourcePath != "" {
		sources = []snapshot.SourceInfo{r.source(sourcePath)}
	} else {
		all, err := snapshot.ListSources(ctx, r.rep)
		if err != nil {
			return nil, classify(err, r.cfg.Store)
		}
		for _, s := range all {
			if s.Host == SnapshotHost && s.UserName == r.cfg.Namespace {
				sources = append(sources, s)
			}
		}
	}
	var out []Snapshot
	for _, si := range sources {
		ms, err := snapshot.ListSnapshots(ctx, r.rep, si)
		if err != nil {
			return nil, classify(err, r.cfg.Store)
		}
		for _, m := range ms {
			if m.IncompleteReason != "" {
				continue
			}
			tags := map[string]string{}
			for k, v := range m.Tags {
				if name, ok := strings.CutPrefix(k, kopiaTagPrefix); ok {
					tags[name] = v
				}
			}
			out = append(out, Snapshot{ID: string(m.ID), SourcePath: m.Source.Path, StartTime: m.StartTime.ToTime(), Tags: tags, Size: m.Stats.TotalFileSize})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTime.Before(out[j].StartTime) })
	return out, nil
}

func (r *kopiaRepository) Delete(ctx context.Context, snapshotID string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	man, err := snapshot.LoadSnapshot(ctx, r.rep, manifest.ID(snapshotID))
	if errors.Is(err, snapshot.ErrSnapshotNotFound) {
		return nil
	}
	if err != nil {
		return classify(err, r.cfg.Store)
	}
	if man.Source.UserName != r.cfg.Namespace {
		return newError(ErrSnapshotNotFound, fmt.Sprintf("Snapshot %s does not belong to namespace %s", snapshotID, r.cfg.Namespace), nil)
	}
	err = repo.WriteSession(ctx, r.rep, repo.WriteSessionOptions{Purpose: "holdfast delete"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		return w.DeleteManifest(ctx, manifest.ID(snapshotID))
	})
	return classify(err, r.cfg.Store)
}

func (r *kopiaRepository) Maintain(ctx context.Context, req MaintenanceRequest) (MaintenanceResult, error) {
	res := MaintenanceResult{Mode: req.Mode, StartTime: time.Now()}
	if err := r.check(ctx); err != nil {
		return res, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mode := maintenance.ModeQuick
	if req.Mode == MaintenanceFull {
		mode = maintenance.ModeFull
	}
	safety := maintenance.SafetyFull
	if req.UnsafeReclaimNow {
		safety = maintenance.SafetyNone
		// With RewriteMinAge 0 every full pass rewrites short packs, deleted contents
		// included, which renews their timestamps so that they are never old enough
		// to drop: in a small repository nothing would ever be reclaimed.
		safety.RewriteMinAge = time.Hour
	}
	err := repo.DirectWriteSession(ctx, r.rep, repo.WriteSessionOptions{Purpose: "holdfast maintenance"}, func(ctx context.Context, dw repo.DirectRepositoryWriter) error {
		// force=false: kopia checks that this client is the maintenance owner.
		return snapshotmaintenance.Run(ctx, dw, mode, false, safety)
	})
	// Maintenance turns on kopia's repository log; write what it logged now and keep
	// later operations of this client from writing log blobs.
	r.rep.LogManager().Sync()
	r.rep.LogManager().Disable()
	res.CompletionTime = time.Now()
	if err != nil {
		var notOwned maintenance.NotOwnedError
		if errors.As(err, &notOwned) {
			return res, fmt.Errorf("kopia maintenance of %s is owned by %s, not %s", r.URL(), notOwned.Owner, r.cfg.owner())
		}
		return res, classify(err, r.cfg.Store)
	}
	res.Message = fmt.Sprintf("kopia %s maintenance finished in %s", strings.ToLower(string(req.Mode)), res.CompletionTime.Sub(res.StartTime).Round(time.Millisecond))
	return res, nil
}

func (r *kopiaRepository) Usage(ctx context.Context) (Usage, error) {
	return storeUsage(ctx, r.cfg.Store, r.cfg.location())
}

func (r *kopiaRepository) Close(ctx context.Context) error {
	err := r.rep.Close(ctx)
	// The config file holds the store's secret key: never leave it behind.
	if rmErr := os.Remove(r.configFile); rmErr != nil && !os.IsNotExist(rmErr) && err == nil {
		err = rmErr
	}
	return err
}

func checkTags(tags map[string]string) error {
	for k, v := range tags {
		if k == "" || strings.ContainsAny(k, ",=") || strings.Contains(v, ",") {
			return fmt.Errorf("snapshot tag %q=%q: keys must be non-empty without ',' or '=', values without ','", k, v)
		}
	}
	return nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// maxUploadParallelism bounds how many files a kopia backup reads at once. kopia's
// default is one per CPU of the node, whatever the agent's CPU and memory limits: on
// a 64-CPU node, 64 files in flight, each with its splitter's and pack's buffers
// (MiBs each), in an agent whose memory limit does not grow with the node. Holdfast
// sets the number itself (measured only on 2 CPUs; docs/performance.md).
const maxUploadParallelism = 8

// uploadCPUs is the node's CPU count; tests replace it.
var uploadCPUs = runtime.NumCPU

// uploadParallelism is the number of files a backup reads at once with cpus CPUs.
func uploadParallelism(cpus int) int { return max(1, min(cpus, maxUploadParallelism)) }
