package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/kopia/kopia/repo/encryption"
	"github.com/kopia/kopia/repo/hashing"
	"github.com/kopia/kopia/repo/splitter"
)

// Tool is one way to back up and restore: Holdfast's data path or a CLI.
type Tool interface {
	Name() string
	// Init creates an empty repository under dir (not measured).
	Init(ctx context.Context, dir string) error
	// Backup snapshots data and returns the snapshot's ID.
	Backup(ctx context.Context, data string) (Sample, string, error)
	// Restore writes snapshot id into target, which exists and is empty.
	Restore(ctx context.Context, id, target string) (Sample, error)
}

// The kopia format every kopia repository in the bench uses: the library defaults,
// which is what repository.Initialize creates (it passes empty NewRepositoryOptions).
var (
	KopiaHash     = hashing.DefaultAlgorithm
	KopiaCipher   = encryption.DefaultAlgorithm
	KopiaSplitter = splitter.DefaultAlgorithm
)

const (
	benchPassword  = "holdfast-bench-password-not-a-secret"
	benchNamespace = "bench"
	benchSource    = "/pvc/data"
)

// Holdfast runs the agent's data mover: the `holdfast agent-mover` child process, fed
// a mover.Job on stdin through mover.Run exactly as the agent does, with a fresh work
// directory per job, and, for backups, the repository's cache kept from the backups
// before (the agent keeps one per repository on its disk-backed /tmp; restores start
// with an empty cache of their own on the same disk, as in the agent).
type Holdfast struct {
	// Binary is a holdfast binary built from this tree.
	Binary string
	// JobDir is where the per-job work directories go (kopia config and caches). The
	// agent's is a memory-backed volume, so the bench passes a tmpfs when there is
	// one; empty means beside the repository.
	JobDir string
	// Uploader is kopia (default) or restic.
	Uploader v1.Uploader
	// ResticPath is the restic binary for the restic uploader.
	ResticPath string

	root, work string
}

func (h *Holdfast) uploader() v1.Uploader {
	if h.Uploader == "" {
		return v1.UploaderKopia
	}
	return h.Uploader
}

func (h *Holdfast) Name() string {
	if h.uploader() == v1.UploaderKopia {
		return "holdfast"
	}
	return "holdfast-" + string(h.uploader())
}

func (h *Holdfast) config() repository.Config {
	return repository.Config{
		Store:      repository.Store{Filesystem: &repository.FilesystemStore{Path: h.root}},
		Uploader:   h.uploader(),
		Namespace:  benchNamespace,
		Password:   benchPassword,
		WorkDir:    filepath.Join(h.work, "manager"),
		ResticPath: h.ResticPath,
	}
}

// Init creates the repository the way the manager's repository controller does.
func (h *Holdfast) Init(ctx context.Context, dir string) error {
	h.root, h.work = filepath.Join(dir, "store"), filepath.Join(dir, "work")
	for _, d := range []string{h.root, h.work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return repository.Initialize(ctx, h.config())
}

func (h *Holdfast) job(kind mover.Kind, dir, snapshot string) (mover.Job, error) {
	parent := h.work
	if h.JobDir != "" {
		parent = h.JobDir
	}
	work, err := os.MkdirTemp(parent, "holdfast-bench-job-")
	if err != nil {
		return mover.Job{}, err
	}
	return mover.Job{
		Kind:       kind,
		Uploader:   h.uploader(),
		Namespace:  benchNamespace,
		Location:   v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: h.root}},
		Password:   benchPassword,
		WorkDir:    work,
		ResticPath: h.ResticPath,
		Dir:        dir,
		SourcePath: benchSource,
		SnapshotID: snapshot,
	}, nil
}

func (h *Holdfast) run(ctx context.Context, job mover.Job) (Sample, mover.Result, error) {
	defer os.RemoveAll(job.WorkDir)
	report, err := reportFile()
	if err != nil {
		return Sample{}, mover.Result{}, err
	}
	// mover.Run starts the child as the agent does (stdin job, stdout events,
	// SIGTERM on cancel); the wrapper in between only measures it.
	cmd := measured(exec.Command(h.Binary, "agent-mover"), report)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	var log []string
	res, err := mover.Run(ctx, cmd, job, nil, func(line string) { log = append(log, line) })
	if err == nil && res.Error != "" {
		err = errors.New(res.Error)
	}
	if err != nil {
		os.Remove(report)
		return Sample{}, res, fmt.Errorf("holdfast agent-mover %s: %w: %s", job.Kind, err, tail(strings.Join(log, "\n"), 1500))
	}
	s, err := readReport(report)
	return s, res, err
}

func (h *Holdfast) Backup(ctx context.Context, data string) (Sample, string, error) {
	job, err := h.job(mover.KindBackup, data, "")
	if err != nil {
		return Sample{}, "", err
	}
	job.CacheDir = filepath.Join(h.work, "cache")
	s, res, err := h.run(ctx, job)
	s.Uploaded, s.Reused = res.BytesUploaded, res.BytesReused
	return s, res.SnapshotID, err
}

func (h *Holdfast) Restore(ctx context.Context, id, target string) (Sample, error) {
	job, err := h.job(mover.KindRestore, target, id)
	if err != nil {
		return Sample{}, err
	}
	// An empty cache of its own beside the kept one, as the agent gives a restore.
	if job.CacheDir, err = os.MkdirTemp(h.work, "restore-cache-"); err != nil {
		return Sample{}, err
	}
	defer os.RemoveAll(job.CacheDir)
	s, _, err := h.run(ctx, job)
	return s, err
}

// KopiaCLI runs the kopia command line tool against a filesystem repository with the
// same format as Holdfast's and the CLI's default parallelism (one file per CPU, as
// the library's uploader uses by default).
type KopiaCLI struct {
	Binary string
	dir    string
}

func (k *KopiaCLI) Name() string { return "kopia" }

func (k *KopiaCLI) cmd(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--config-file", filepath.Join(k.dir, "kopia.config")}, args...)
	cmd := exec.CommandContext(ctx, k.Binary, all...)
	cmd.Env = []string{
		"KOPIA_PASSWORD=" + benchPassword,
		"KOPIA_CHECK_FOR_UPDATES=false",
		"HOME=" + k.dir,
		"PATH=/usr/bin:/bin",
	}
	return cmd
}

func (k *KopiaCLI) Init(ctx context.Context, dir string) error {
	k.dir = dir
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o700); err != nil {
		return err
	}
	steps := [][]string{
		{"repository", "create", "filesystem", "--path", filepath.Join(dir, "store"),
			"--cache-directory", filepath.Join(dir, "cache"),
			"--block-hash", KopiaHash, "--encryption", KopiaCipher, "--object-splitter", KopiaSplitter,
			"--override-username", benchNamespace, "--override-hostname", "holdfast"},
		// Holdfast never runs maintenance inside a backup (the manager owns it); the CLI
		// would, as the repository's owner, so it is turned off for a fair comparison.
		{"maintenance", "set", "--enable-quick=false", "--enable-full=false"},
	}
	for _, args := range steps {
		if _, _, err := runMeasured(ctx, k.cmd(ctx, args...)); err != nil {
			return err
		}
	}
	return nil
}

func (k *KopiaCLI) Backup(ctx context.Context, data string) (Sample, string, error) {
	s, _, err := runMeasured(ctx, k.cmd(ctx, "snapshot", "create", data))
	if err != nil {
		return s, "", err
	}
	_, out, err := runMeasured(ctx, k.cmd(ctx, "snapshot", "list", data, "--json"))
	if err != nil {
		return s, "", err
	}
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &list); err != nil || len(list) == 0 {
		return s, "", fmt.Errorf("kopia snapshot list: %v (%d snapshots)", err, len(list))
	}
	return s, list[len(list)-1].ID, nil
}

func (k *KopiaCLI) Restore(ctx context.Context, id, target string) (Sample, error) {
	s, _, err := runMeasured(ctx, k.cmd(ctx, "snapshot", "restore", id, target))
	return s, err
}

// ResticCLI runs the restic command line tool with its defaults against a filesystem
// repository.
type ResticCLI struct {
	Binary string
	dir    string
}

func (r *ResticCLI) Name() string { return "restic" }

func (r *ResticCLI) cmd(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--repo", filepath.Join(r.dir, "store"), "--cache-dir", filepath.Join(r.dir, "cache"), "--quiet"}, args...)
	cmd := exec.CommandContext(ctx, r.Binary, all...)
	cmd.Env = []string{"RESTIC_PASSWORD=" + benchPassword, "HOME=" + r.dir, "PATH=/usr/bin:/bin", "TMPDIR=" + r.dir}
	return cmd
}

func (r *ResticCLI) Init(ctx context.Context, dir string) error {
	r.dir = dir
	_, _, err := runMeasured(ctx, r.cmd(ctx, "init"))
	return err
}

func (r *ResticCLI) Backup(ctx context.Context, data string) (Sample, string, error) {
	s, out, err := runMeasured(ctx, r.cmd(ctx, "backup", "--host", "holdfast", "--json", data))
	if err != nil {
		return s, "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		var ev struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.MessageType == "summary" {
			return s, ev.SnapshotID, nil
		}
	}
	return s, "", fmt.Errorf("restic backup printed no summary")
}

func (r *ResticCLI) Restore(ctx context.Context, id, target string) (Sample, error) {
	s, _, err := runMeasured(ctx, r.cmd(ctx, "restore", id, "--target", target))
	return s, err
}
