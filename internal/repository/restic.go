package repository

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/holdfast-dev/holdfast/internal/confinedfs"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// resticSourceTag records the source path on restic snapshots: restic itself records
// the directory it read, which changes with every pod.
const resticSourceTag = "holdfast-source"

// Exit codes of restic 0.17+.
const (
	resticExitNoRepository = 10
	resticExitLocked       = 11
	resticExitWrongKey     = 12
)

type resticRepository struct {
	cfg    Config
	dir    string
	binary string
	mu     sync.Mutex
	// dataLockWait and adminLockWait are how long a command waits for a lock another
	// process holds (see resticDataLockWait); tests shorten them.
	dataLockWait, adminLockWait time.Duration
}

func newRestic(cfg Config) (*resticRepository, error) {
	dir, err := cfg.privateDir()
	if err != nil {
		return nil, err
	}
	bin := cfg.ResticPath
	if bin == "" {
		bin = "restic"
	}
	r := &resticRepository{cfg: cfg, dir: dir, binary: bin, dataLockWait: resticDataLockWait, adminLockWait: resticAdminLockWait}
	if cfg.ResticDataLockWait > 0 {
		r.dataLockWait = cfg.ResticDataLockWait
	}
	if cfg.Store.S3 != nil && len(cfg.Store.S3.CABundle) > 0 {
		if err := os.WriteFile(r.caFile(), cfg.Store.S3.CABundle, 0o600); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"cache", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *resticRepository) caFile() string { return filepath.Join(r.dir, "ca.pem") }

func (r *resticRepository) cacheDir() string {
	if r.cfg.CacheDir != "" {
		return r.cfg.CacheDir
	}
	return filepath.Join(r.dir, "cache")
}

// ResticRepository is the restic repository string (restic -r) of cfg's namespace in
// its store, for the restic CLI; it holds no secret.
func ResticRepository(cfg Config) string {
	return (&resticRepository{cfg: cfg}).repository()
}

// repository is the restic repository string; it holds no secret.
func (r *resticRepository) repository() string {
	st := r.cfg.Store
	if st.Filesystem != nil {
		return filepath.Join(st.Filesystem.Path, r.cfg.location())
	}
	scheme := "https"
	if st.S3.Insecure {
		scheme = "http"
	}
	return "s3:" + scheme + "://" + st.S3.Endpoint + "/" + st.S3.Bucket + "/" + st.S3.key(r.cfg.location())
}

// environment passes every secret to restic: credentials and password never appear on
// the command line (visible in /proc) or in logs. Nothing else of the process's
// environment is inherited, so stray AWS_* variables cannot leak in.
func (r *resticRepository) environment() []string {
	env := []string{
		"RESTIC_REPOSITORY=" + r.repository(),
		"RESTIC_PASSWORD=" + r.cfg.Password,
		"RESTIC_CACHE_DIR=" + r.cacheDir(),
		"TMPDIR=" + filepath.Join(r.dir, "tmp"),
		"HOME=" + r.dir,
		"PATH=/usr/local/bin:/usr/bin:/bin",
	}
	if s := r.cfg.Store.S3; s != nil {
		env = append(env, "AWS_ACCESS_KEY_ID="+s.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+s.SecretAccessKey)
		if s.SessionToken != "" {
			env = append(env, "AWS_SESSION_TOKEN="+s.SessionToken)
		}
		if s.Region != "" {
			env = append(env, "AWS_DEFAULT_REGION="+s.Region)
		}
	}
	return env
}

// How long a restic command waits for a lock another process holds. A prune or a
// forget locks the repository exclusively; a backup or a restore shares the lock.
//   - A backup or restore (the agent's, which a pod may be waiting for) waits out a
//     long prune: resticDataLockWait. Past that it ends with ErrLocked, which the
//     agent treats as "try again later", not as a failed backup.
//   - The manager's prune and forget wait resticAdminLockWait, then end with
//     ErrLocked: maintenance is deferred and tried again soon, between backups, rather
//     than holding a maintenance slot for as long as a large backup runs.
const (
	resticDataLockWait  = 30 * time.Minute
	resticAdminLockWait = 2 * time.Minute
)

// lockWait is how long the restic command cmd waits for a lock.
func (r *resticRepository) lockWait(cmd string) time.Duration {
	switch cmd {
	case "backup", "dump", "restore":
		return r.dataLockWait
	}
	return r.adminLockWait
}

func (r *resticRepository) globalArgs(cmd string) []string {
	args := []string{"--retry-lock", r.lockWait(cmd).String()}
	if s := r.cfg.Store.S3; s != nil {
		if s.ForcePathStyle {
			args = append(args, "-o", "s3.bucket-lookup=path")
		}
		if s.Region != "" {
			args = append(args, "-o", "s3.region="+s.Region)
		}
		if len(s.CABundle) > 0 {
			args = append(args, "--cacert", r.caFile())
		}
	}
	return args
}

// resticError is a failed restic run: its exit code and the last lines of stderr.
type resticError struct {
	code   int
	stderr string
}

func (e *resticError) Error() string {
	return fmt.Sprintf("restic exited with code %d: %s", e.code, e.stderr)
}

// run runs restic with args; stdout goes to out (if not nil). Cancelling ctx sends
// SIGINT (restic then removes its locks) and SIGKILL 30 seconds later.
func (r *resticRepository) run(ctx context.Context, out io.Writer, args ...string) error {
	return r.runTee(ctx, out, nil, args...)
}

// runTee is run that also copies restic's stderr to errOut (if not nil): restic backup
// --json reports the entries it could not read there.
func (r *resticRepository) runTee(ctx context.Context, out, errOut io.Writer, args ...string) error {
	all := append(append([]string{}, args[:1]...), r.globalArgs(args[0])...)
	all = append(all, args[1:]...)
	cmd := exec.CommandContext(ctx, r.binary, all...)
	cmd.Env = r.environment()
	cmd.Dir = r.dir
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	if errOut != nil {
		cmd.Stderr = io.MultiWriter(&stderr, errOut)
	}
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &resticError{code: exit.ExitCode(), stderr: lastLines(stderr.String(), 5)}
	}
	return fmt.Errorf("running restic: %w", err)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// classifyRestic maps a restic failure to an *Error.
func (r *resticRepository) classify(err error) error {
	var re *resticError
	if !errors.As(err, &re) {
		return classify(err, r.cfg.Store)
	}
	msg := strings.ToLower(re.stderr)
	st := r.cfg.Store
	switch {
	case re.code == resticExitWrongKey || strings.Contains(msg, "wrong password"):
		return newError(ErrWrongKey, fmt.Sprintf("The restic repository at %s cannot be opened with this repository's key: the key Secret was replaced, or the data belongs to another repository; restore the original key Secret", r.cfg.URL()), err)
	case re.code == resticExitLocked:
		return newError(ErrLocked, fmt.Sprintf("The restic repository at %s stayed locked by another restic process (a prune, a forget, a backup or a restore) for longer than this operation waits; it is tried again later", r.cfg.URL()), err)
	case re.code == resticExitNoRepository:
		return newError(ErrNotInitialized, fmt.Sprintf("No restic repository exists at %s yet", r.cfg.URL()), err)
	case st.S3 != nil && (strings.Contains(msg, "bucket does not exist") || strings.Contains(msg, "nosuchbucket")):
		return bucketMissing(st)
	case st.S3 != nil && (strings.Contains(msg, "access denied") || strings.Contains(msg, "access key id") || strings.Contains(msg, "signature") || strings.Contains(msg, "forbidden")):
		return credentialsError(st, err)
	case st.S3 != nil && strings.Contains(msg, "x509"):
		return newError(ErrUntrustedCertificate, fmt.Sprintf("The TLS certificate of %s is not signed by a trusted authority: set spec.s3.caBundle to the PEM of the authority that signs it", st.S3.Endpoint), err)
	case st.S3 != nil && (strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") || strings.Contains(msg, "i/o timeout")):
		return newError(ErrUnreachable, fmt.Sprintf("The store endpoint %s cannot be reached: check spec.s3.endpoint and that the store is running and reachable from the cluster", st.S3.Endpoint), err)
	}
	return newError(ErrDamaged, fmt.Sprintf("The restic repository at %s failed: %s", r.cfg.URL(), re.stderr), err)
}

func initializeRestic(ctx context.Context, cfg Config) error {
	r, err := newRestic(cfg)
	if err != nil {
		return err
	}
	if err := r.run(ctx, nil, "init"); err != nil {
		return r.classify(err)
	}
	if cfg.Store.Filesystem != nil {
		if err := shareResticRepository(r.repository()); err != nil {
			return fmt.Errorf("sharing the restic repository at %s with the group: %w", cfg.URL(), err)
		}
	}
	return nil
}

func openRestic(ctx context.Context, cfg Config) (*resticRepository, error) {
	r, err := newRestic(cfg)
	if err != nil {
		return nil, err
	}
	// "cat config" reads and decrypts the config with the key: it tells a missing
	// repository, a wrong key and a damaged one apart without writing anything.
	if err := r.run(ctx, io.Discard, "cat", "config"); err != nil {
		return nil, r.classify(err)
	}
	return r, nil
}

func (r *resticRepository) URL() string { return r.cfg.URL() }

type resticSnapshot struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Paths   []string  `json:"paths"`
	Tags    []string  `json:"tags"`
	Summary *struct {
		TotalBytesProcessed int64 `json:"total_bytes_processed"`
		TotalFilesProcessed int64 `json:"total_files_processed"`
	} `json:"summary"`
}

func (s resticSnapshot) source() (string, map[string]string) {
	tags := map[string]string{}
	source := ""
	for _, t := range s.Tags {
		k, v, _ := strings.Cut(t, "=")
		if k == resticSourceTag {
			source = v
			continue
		}
		tags[k] = v
	}
	return source, tags
}

func (r *resticRepository) listSnapshots(ctx context.Context, sourcePath string) ([]resticSnapshot, error) {
	args := []string{"snapshots", "--json", "--no-lock", "--host", SnapshotHost}
	if sourcePath != "" {
		args = append(args, "--tag", resticSourceTag+"="+sourcePath)
	}
	var out bytes.Buffer
	if err := r.run(ctx, &out, args...); err != nil {
		return nil, r.classify(err)
	}
	var snaps []resticSnapshot
	if err := json.Unmarshal(out.Bytes(), &snaps); err != nil {
		return nil, fmt.Errorf("reading restic's snapshot list: %w", err)
	}
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].Time.Before(snaps[j].Time) })
	return snaps, nil
}

func (r *resticRepository) Backup(ctx context.Context, req BackupRequest) (BackupResult, error) {
	if err := checkTags(req.Tags); err != nil {
		return BackupResult{}, err
	}
	if strings.Contains(req.SourcePath, ",") {
		return BackupResult{}, fmt.Errorf("source path %q must not contain ','", req.SourcePath)
	}
	dir, err := filepath.Abs(req.Dir)
	if err != nil {
		return BackupResult{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var res BackupResult
	previous, err := r.listSnapshots(ctx, req.SourcePath)
	if err != nil {
		return res, err
	}
	args := []string{"backup", "--json", "--host", SnapshotHost, "--tag", resticSourceTag + "=" + req.SourcePath}
	keys := make([]string, 0, len(req.Tags))
	for k := range req.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--tag", k+"="+req.Tags[k])
	}
	for i := len(previous) - 1; i >= 0 && req.Parent != NoParent; i-- {
		if req.Parent == "" || previous[i].ID == req.Parent {
			res.ParentSnapshotID = previous[i].ID
			args = append(args, "--parent", res.ParentSnapshotID)
			break
		}
	}
	// Without ExcludeCaches the sockets are counted alongside restic's walk; with it,
	// the same walk runs first and finds the cache directories that restic is told
	// to leave out (see cacheDirs: restic does not read the tags itself).
	caches := newCacheDirs(req.ExcludeCaches)
	sockets := make(chan int64, 1)
	if req.ExcludeCaches {
		sockets <- walkVolume(dir, caches)
		if caches.count() > 0 {
			excludes, err := r.writeExcludes(caches.list)
			if err != nil {
				return res, err
			}
			defer os.Remove(excludes)
			args = append(args, "--exclude-file", excludes)
		}
	} else {
		go func() { sockets <- walkVolume(dir, nil) }()
	}
	args = append(args, dir)

	var last atomic.Pointer[Progress]
	stop := publish(ctx, req.Progress, func() Progress {
		if p := last.Load(); p != nil {
			return *p
		}
		return Progress{}
	})
	defer stop()
	pr, pw := io.Pipe()
	var summary struct {
		SnapshotID          string `json:"snapshot_id"`
		DataAdded           int64  `json:"data_added"`
		TotalFilesProcessed int64  `json:"total_files_processed"`
		TotalBytesProcessed int64  `json:"total_bytes_processed"`
	}
	var itemErrors resticItemErrors
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var msg struct {
				Type       string `json:"message_type"`
				TotalFiles int64  `json:"total_files"`
				FilesDone  int64  `json:"files_done"`
				TotalBytes int64  `json:"total_bytes"`
				BytesDone  int64  `json:"bytes_done"`
			}
			if json.Unmarshal(sc.Bytes(), &msg) != nil {
				continue
			}
			switch msg.Type {
			case "status":
				last.Store(&Progress{BytesDone: msg.BytesDone, TotalBytes: msg.TotalBytes, FilesDone: msg.FilesDone, TotalFiles: msg.TotalFiles})
			case "summary":
				_ = json.Unmarshal(sc.Bytes(), &summary)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	epr, epw := io.Pipe()
	errorsParsed := make(chan struct{})
	go func() {
		defer close(errorsParsed)
		sc := bufio.NewScanner(epr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var e resticItemError
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "error" {
				itemErrors.add(e)
			}
		}
		_, _ = io.Copy(io.Discard, epr)
	}()
	err = r.runTee(ctx, pw, epw, args...)
	_ = pw.Close()
	_ = epw.Close()
	<-parsed
	<-errorsParsed
	var re *resticError
	if errors.As(err, &re) && re.code == resticExitIncomplete && summary.SnapshotID != "" {
		// restic stored a snapshot without the entries it could not read.
		if len(itemErrors.failed) == 0 && itemErrors.skipped.Total() > 0 {
			err = nil // all of them vanished or changed type: a live volume
		} else {
			if len(itemErrors.failed) == 0 {
				itemErrors.failed = []string{re.stderr}
			}
			// Not a snapshot to restore from: it lacks files for no reason a live
			// volume explains, and would otherwise be listed as complete.
			if ferr := r.run(context.WithoutCancel(ctx), io.Discard, "forget", summary.SnapshotID); ferr != nil {
				return BackupResult{}, fmt.Errorf("restic could not read %s, and forgetting its incomplete snapshot %s failed: %w", strings.Join(itemErrors.failed, "; "), summary.SnapshotID, r.classify(ferr))
			}
			return BackupResult{}, fmt.Errorf("the snapshot of %s is incomplete: %s", req.Dir, strings.Join(itemErrors.failed, "; "))
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return BackupResult{}, ctx.Err()
		}
		return BackupResult{}, r.classify(err)
	}
	if summary.SnapshotID == "" {
		return BackupResult{}, errors.New("restic backup finished without reporting a snapshot")
	}
	res.SnapshotID = summary.SnapshotID
	res.BytesUploaded = summary.DataAdded
	res.TotalBytes = summary.TotalBytesProcessed
	res.TotalFiles = summary.TotalFilesProcessed
	res.Skipped = itemErrors.skipped
	res.Skipped.Sockets = <-sockets
	res.Skipped.CacheDirectories = caches.count()
	stop()
	if req.Progress != nil {
		req.Progress(Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes, FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles})
	}
	return res, nil
}

// walkVolume counts the sockets below dir, which restic backup leaves out without a
// word, and finds the cache directories in caches (nil: none), whose contents it
// does not read, as restic will not. It reads only directories (the listing says an
// entry's type) and the cache directories' tags; what it cannot read it does not
// count.
func walkVolume(dir string, caches *cacheDirs) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
		case d.IsDir() && caches.visit(p):
			return filepath.SkipDir
		case d.Type()&fs.ModeSocket != 0:
			n++
		}
		return nil
	})
	return n
}

// writeExcludes writes the restic exclude file for the cache directories dirs into
// the repository's private temporary directory, and returns its path.
func (r *resticRepository) writeExcludes(dirs []string) (string, error) {
	f, err := os.CreateTemp(filepath.Join(r.dir, "tmp"), "excludes-")
	if err != nil {
		return "", fmt.Errorf("writing restic's exclude file: %w", err)
	}
	_, err = io.WriteString(f, strings.Join(resticExcludes(dirs), "\n")+"\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("writing restic's exclude file: %w", err)
	}
	return f.Name(), nil
}

// resticExitIncomplete is restic backup's exit code when it stored a snapshot
// without some entries it could not read.
const resticExitIncomplete = 3

// resticItemError is restic backup's JSON message about an entry it could not read.
type resticItemError struct {
	Type  string `json:"message_type"`
	Error struct {
		Message string `json:"message"`
	} `json:"error"`
	During string `json:"during"`
	Item   string `json:"item"`
}

// resticItemErrors sorts restic's read errors: what a live volume causes is counted
// as skipped, anything else makes the backup fail.
type resticItemErrors struct {
	skipped Skipped
	// failed are the first other errors, "item: message".
	failed []string
}

func (e *resticItemErrors) add(m resticItemError) {
	msg := m.Error.Message
	switch {
	// restic reports errno text; the item was listed, then gone (lstat, open).
	case strings.Contains(msg, syscall.ENOENT.Error()):
		e.skipped.Vanished++
	case strings.Contains(msg, "changed type"), strings.Contains(msg, syscall.ENOTDIR.Error()):
		e.skipped.ChangedType++
	default:
		if len(e.failed) < maxReportedFailures {
			e.failed = append(e.failed, fmt.Sprintf("cannot read %s: %s", m.Item, msg))
		}
	}
}

func (r *resticRepository) find(ctx context.Context, id string) (*resticSnapshot, error) {
	snaps, err := r.listSnapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	for i := range snaps {
		if snaps[i].ID == id {
			return &snaps[i], nil
		}
	}
	return nil, nil
}

func (r *resticRepository) Restore(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	snap, err := r.find(ctx, req.SnapshotID)
	if err != nil {
		return RestoreResult{}, err
	}
	if snap == nil || len(snap.Paths) != 1 {
		return RestoreResult{}, newError(ErrSnapshotNotFound, fmt.Sprintf("Snapshot %s does not exist in %s", req.SnapshotID, r.URL()), nil)
	}
	if len(req.Paths) > 0 {
		return r.restorePaths(ctx, req, snap)
	}
	// restic restore writes where the snapshot's names point; instead the snapshot is
	// streamed as a tar (the directory it was taken of, under its full path, is the
	// root) and every entry is written through confinedfs, so nothing can land outside
	// the target.
	w, err := openTarget(req)
	if err != nil {
		return RestoreResult{}, err
	}
	defer w.Close()
	var total Progress
	if snap.Summary != nil {
		total = Progress{TotalBytes: snap.Summary.TotalBytesProcessed, TotalFiles: snap.Summary.TotalFilesProcessed}
	}
	stop := publish(ctx, req.Progress, func() Progress {
		return Progress{BytesDone: w.BytesDone(), TotalBytes: total.TotalBytes, FilesDone: w.FilesDone(), TotalFiles: total.TotalFiles}
	})
	defer stop()
	dumpCtx, cancelDump := context.WithCancel(ctx)
	defer cancelDump()
	pr, pw := io.Pipe()
	extracted := make(chan error, 1)
	// restic dump writes FIFOs and device nodes as empty regular files, each name
	// of a hard-linked file as a copy, and nothing for the root: restic ls says what
	// they are.
	tree, err := r.tree(ctx, snap, nil)
	if err != nil {
		return RestoreResult{}, err
	}
	// The directory above the snapshot's holds only it (a Holdfast snapshot has one
	// path): dumping it gives the root's own entry, with its extended attributes, as
	// dumping the root does not.
	dumpArgs, root := []string{snap.ID + ":" + snap.Paths[0], "/"}, ""
	if parent, base := filepath.Split(filepath.Clean(snap.Paths[0])); base != "" {
		dumpArgs, root = []string{snap.ID + ":" + parent, "/"}, base
	}
	var stats confinedfs.TarStats
	go func() {
		var err error
		stats, err = confinedfs.ExtractTar(dumpCtx, w, pr, confinedfs.TarOptions{Special: tree.special, HardLinks: &tree.links, ModTimes: tree.modTimes, Root: root})
		if err != nil {
			// Stop restic: the rest of the stream is not wanted.
			cancelDump()
			_ = pr.CloseWithError(err)
		} else {
			_, _ = io.Copy(io.Discard, pr)
		}
		extracted <- err
	}()
	// --quiet: restic prints "repo already locked, waiting..." to stdout when the
	// manager's prune holds the lock, and stdout is the tar stream.
	runErr := r.run(dumpCtx, pw, append([]string{"dump", "--quiet", "--archive", "tar"}, dumpArgs...)...)
	_ = pw.CloseWithError(runErr)
	if err := <-extracted; err != nil {
		if ctx.Err() != nil {
			return RestoreResult{}, ctx.Err()
		}
		return RestoreResult{}, fmt.Errorf("restoring snapshot %s: %w", snap.ID, err)
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return RestoreResult{}, ctx.Err()
		}
		return RestoreResult{}, r.classify(runErr)
	}
	if tree.root != nil {
		// The tar has no entry for the root: restic ls gave its metadata.
		if err := w.SetMetadata(".", *tree.root); err != nil {
			return RestoreResult{}, fmt.Errorf("restoring snapshot %s: %w", snap.ID, err)
		}
	}
	stop()
	res := RestoreResult{TotalBytes: w.BytesDone(), TotalFiles: w.FilesDone(), NotRestored: NotRestored{
		FIFOs: tree.lostFIFOs, Devices: stats.DevicesSkipped, Attributes: stats.AttributesRefused, Other: stats.Skipped,
	}}
	if req.Progress != nil {
		req.Progress(Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes, FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles})
	}
	return res, nil
}

// restorePaths restores only req.Paths of snap, each at its own place: a directory
// from restic dump's tar of it (which lacks the directory's own entry: restic ls gives
// its metadata), a file from restic dump's stream of its content. Every entry goes
// through confinedfs, as for a whole snapshot; no entry outside the paths is written.
func (r *resticRepository) restorePaths(ctx context.Context, req RestoreRequest, snap *resticSnapshot) (RestoreResult, error) {
	tree, err := r.tree(ctx, snap, req.Paths)
	if err != nil {
		return RestoreResult{}, err
	}
	for _, p := range req.Paths {
		if _, ok := tree.found[p]; !ok {
			return RestoreResult{}, &kopiarestore.PathNotInSnapshotError{Path: p, Snapshot: req.SnapshotID}
		}
	}
	w, err := openTarget(req)
	if err != nil {
		return RestoreResult{}, err
	}
	defer w.Close()
	stop := publish(ctx, req.Progress, func() Progress {
		return Progress{BytesDone: w.BytesDone(), TotalBytes: tree.selected.TotalBytes, FilesDone: w.FilesDone(), TotalFiles: tree.selected.TotalFiles}
	})
	defer stop()
	var res RestoreResult
	snapRoot := snap.ID + ":" + snap.Paths[0]
	for _, p := range req.Paths {
		node := tree.found[p]
		meta := confinedfs.Meta{Mode: node.Mode, UID: node.UID, GID: node.GID, ModTime: node.ModTime}
		if dir := path.Dir(p); dir != "." {
			if err := w.Mkdir(dir); err != nil {
				return RestoreResult{}, fmt.Errorf("restoring %s of snapshot %s: %w", p, snap.ID, err)
			}
		}
		switch node.Type {
		case "dir":
			special := map[string]confinedfs.Meta{}
			for rel, m := range tree.special {
				if kopiarestore.Under(rel, []string{p}) {
					special[rel] = m
				}
			}
			err = r.dumpInto(ctx, func(rd io.Reader) error {
				stats, err := confinedfs.ExtractTar(ctx, w, rd, confinedfs.TarOptions{Special: special, HardLinks: &tree.links, ModTimes: tree.modTimes})
				res.NotRestored.Devices += stats.DevicesSkipped
				res.NotRestored.Attributes += stats.AttributesRefused
				res.NotRestored.Other += stats.Skipped
				return err
			}, "dump", "--quiet", "--archive", "tar", snapRoot, "/"+p)
			if err == nil {
				err = w.Mkdir(p) // an empty directory is not in the tar
			}
			if err == nil {
				err = w.SetMetadata(p, meta)
			}
		case "file":
			err = r.dumpInto(ctx, func(rd io.Reader) error {
				_, err := w.WriteFileWithMetadata(p, rd, meta)
				return err
			}, "dump", "--quiet", snapRoot, "/"+p)
		case "symlink":
			// restic ls prints no symlink target: the stored tree has it.
			var stored resticTreeNode
			browse := &resticBrowse{r: r, snap: snap, root: path.Clean(snap.Paths[0])}
			if stored, err = browse.lookup(ctx, p); err == nil {
				err = w.Symlink(p, stored.LinkTarget)
			}
		default:
			res.NotRestored.Other++ // a FIFO or device named on its own
		}
		if err != nil {
			if ctx.Err() != nil {
				return RestoreResult{}, ctx.Err()
			}
			return RestoreResult{}, fmt.Errorf("restoring %s of snapshot %s: %w", p, snap.ID, err)
		}
	}
	stop()
	res.TotalBytes, res.TotalFiles = w.BytesDone(), w.FilesDone()
	if req.Progress != nil {
		req.Progress(Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes, FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles})
	}
	return res, nil
}

// dumpInto runs restic with args and hands its standard output to consume; an error
// of consume stops restic.
func (r *resticRepository) dumpInto(ctx context.Context, consume func(io.Reader) error, args ...string) error {
	dumpCtx, cancelDump := context.WithCancel(ctx)
	defer cancelDump()
	pr, pw := io.Pipe()
	consumed := make(chan error, 1)
	go func() {
		err := consume(pr)
		if err != nil {
			cancelDump()
			_ = pr.CloseWithError(err)
		} else {
			_, _ = io.Copy(io.Discard, pr)
		}
		consumed <- err
	}()
	runErr := r.run(dumpCtx, pw, args...)
	_ = pw.CloseWithError(runErr)
	if err := <-consumed; err != nil {
		return err
	}
	if runErr != nil {
		return r.classify(runErr)
	}
	return nil
}

// resticTree is what restic ls says of a snapshot that restic dump's tar does not.
type resticTree struct {
	// special are the FIFOs and device nodes, by path as confinedfs.Clean gives it:
	// dump writes them as empty regular files, or not at all.
	special map[string]confinedfs.Meta
	// links groups the names of hard-linked files: dump writes each as a copy.
	links confinedfs.HardLinks
	// root is the metadata of the snapshot's root directory, which the tar lacks.
	root *confinedfs.Meta
	// modTimes are the entries' times to the nanosecond (Unix ns) by
	// confinedfs.PathHash: the tar carries whole seconds.
	modTimes map[uint64]int64
	// found are the nodes of the paths a partial restore asked for, by path.
	found map[string]resticNode
	// selected counts the files under those paths and their bytes.
	selected Progress
	// lostFIFOs counts the FIFOs whose names restic ls garbles (not UTF-8): restic
	// dump writes no FIFO, and such a name cannot be trusted, so none of them is
	// made. The restore counts them as not restored.
	lostFIFOs int64
}

// maxPreciseTimes bounds the times to the nanosecond a restic restore keeps, at about
// 40 bytes each: entries beyond it come back with whole seconds.
const maxPreciseTimes = 2 << 20

// resticNode is a node of restic ls --json.
type resticNode struct {
	StructType string      `json:"struct_type"`
	Type       string      `json:"type"`
	Path       string      `json:"path"`
	UID        int         `json:"uid"`
	GID        int         `json:"gid"`
	Mode       fs.FileMode `json:"mode"`
	ModTime    time.Time   `json:"mtime"`
	Inode      uint64      `json:"inode"`
	Size       int64       `json:"size"`
}

// tree lists snap with restic ls: one more walk of its tree (restic's cache holds
// the tree), holding one small map entry per file for the hard links.
func (r *resticRepository) tree(ctx context.Context, snap *resticSnapshot, paths []string) (*resticTree, error) {
	pr, pw := io.Pipe()
	t := &resticTree{special: map[string]confinedfs.Meta{}, modTimes: map[uint64]int64{}, found: map[string]resticNode{}}
	wanted := map[string]bool{}
	for _, p := range paths {
		wanted[p] = true
	}
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		rootPath := ""
		for sc.Scan() {
			var node resticNode
			if json.Unmarshal(sc.Bytes(), &node) != nil || node.StructType != "node" {
				continue
			}
			if t.root == nil { // the first node is the directory the snapshot was taken of
				rootPath = node.Path
				t.root = &confinedfs.Meta{Mode: node.Mode, UID: node.UID, GID: node.GID, ModTime: node.ModTime}
				continue
			}
			if strings.ContainsRune(node.Path, utf8.RuneError) {
				// restic ls writes each byte of a name that is not UTF-8 as U+FFFD, so
				// this path may stand for another entry's: trusting it could make a
				// file a FIFO or a hard link of another. The entry comes back as the
				// tar has it, which for a FIFO is not at all.
				if node.Type == "fifo" {
					t.lostFIFOs++
				}
				continue
			}
			rel, err := confinedfs.Clean(strings.TrimPrefix(node.Path, rootPath+"/"))
			if err != nil {
				continue
			}
			if wanted[rel] {
				t.found[rel] = node
			}
			if len(paths) > 0 && node.Type == "file" && kopiarestore.Under(rel, paths) {
				t.selected.TotalBytes += node.Size
				t.selected.TotalFiles++
			}
			if node.ModTime.Nanosecond() != 0 && len(t.modTimes) < maxPreciseTimes {
				t.modTimes[confinedfs.PathHash(rel)] = node.ModTime.UnixNano()
			}
			switch node.Type {
			case "file":
				t.links.Add(rel, node.Inode)
			case "fifo", "chardev", "dev":
				// restic's mode has the type bits of an fs.FileMode.
				t.special[rel] = confinedfs.Meta{Mode: node.Mode, UID: node.UID, GID: node.GID, ModTime: node.ModTime}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := r.run(ctx, pw, "ls", "--json", "--no-lock", "--recursive", snap.ID, snap.Paths[0])
	_ = pw.Close()
	<-parsed
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, r.classify(err)
	}
	return t, nil
}

func (r *resticRepository) Snapshots(ctx context.Context, sourcePath string) ([]Snapshot, error) {
	snaps, err := r.listSnapshots(ctx, sourcePath)
	if err != nil {
		return nil, err
	}
	out := make([]Snapshot, 0, len(snaps))
	for _, s := range snaps {
		source, tags := s.source()
		var size int64
		if s.Summary != nil {
			size = s.Summary.TotalBytesProcessed
		}
		out = append(out, Snapshot{ID: s.ID, SourcePath: source, StartTime: s.Time, Tags: tags, Size: size})
	}
	return out, nil
}

func (r *resticRepository) Delete(ctx context.Context, snapshotID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap, err := r.find(ctx, snapshotID)
	if err != nil {
		return err
	}
	if snap == nil {
		return nil
	}
	if err := r.run(ctx, io.Discard, "forget", snap.ID); err != nil {
		return r.classify(err)
	}
	return nil
}

func (r *resticRepository) Maintain(ctx context.Context, req MaintenanceRequest) (MaintenanceResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := MaintenanceResult{Mode: MaintenancePrune, StartTime: time.Now()}
	// A mover killed mid-backup (OOM, node drain) leaves its lock behind, and restic
	// waits for it like for a live one. unlock removes only stale locks: those of a
	// process gone from this host, or not refreshed for 30 minutes.
	if err := r.run(ctx, io.Discard, "unlock"); err != nil {
		res.CompletionTime = time.Now()
		return res, r.classify(err)
	}
	var out bytes.Buffer
	err := r.run(ctx, &out, "prune")
	res.CompletionTime = time.Now()
	if err != nil {
		return res, r.classify(err)
	}
	res.Message = fmt.Sprintf("restic prune finished in %s", res.CompletionTime.Sub(res.StartTime).Round(time.Millisecond))
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "total prune:"); ok {
			res.Message += ", removed " + strings.TrimSpace(rest)
		}
	}
	return res, nil
}

func (r *resticRepository) Usage(ctx context.Context) (Usage, error) {
	return storeUsage(ctx, r.cfg.Store, r.cfg.location())
}

func (r *resticRepository) Close(context.Context) error { return nil }
