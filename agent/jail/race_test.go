package jail_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/holdfast-dev/holdfast/agent/jail"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// racingBackups is how many backups each uploader takes while the volume's owner keeps
// swapping its entries for symlinks.
const racingBackups = 200

// loopJob is what the backup-loop role needs besides the jail.
type loopJob struct {
	Uploader v1.Uploader
	Password string
	Backups  int
}

type loopResult struct {
	SnapshotID string
	Err        string
}

// TestRacingSwapsNeverLeak is the attack as a tenant would run it: while the agent
// backs up the volume again and again, the pod renames a file and a directory and puts
// symlinks in their place, pointing at secrets of the node and at the job's own
// credentials. For each uploader, no snapshot may hold a secret's bytes, and a backup
// that ran into a symlink where it had listed a file or directory either stores what
// the volume held or fails naming the entry.
func TestRacingSwapsNeverLeak(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			ctx := context.Background()
			store := filepath.Join(t.TempDir(), "store")
			if err := os.MkdirAll(store, 0o700); err != nil {
				t.Fatal(err)
			}
			restic := filepath.Join(testenv.ToolsBin(), "restic")
			password, err := repository.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			cfg := repository.Config{
				Store:    repository.Store{Filesystem: &repository.FilesystemStore{Path: store}},
				Uploader: uploader, Namespace: "tenant", Password: password,
				WorkDir: t.TempDir(), ResticPath: restic,
			}
			if err := repository.Initialize(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			spec := f.spec()
			spec.Store = store
			if uploader == v1.UploaderRestic {
				spec.Restic = restic
			}
			extra, _ := json.Marshal(loopJob{Uploader: uploader, Password: password, Backups: racingBackups})
			c := startChild(t, "backup-loop", spec, string(extra), true)

			stop := make(chan struct{})
			var swaps sync.WaitGroup
			swaps.Add(1)
			go func() {
				defer swaps.Done()
				swapUntil(t, f, stop)
			}()
			var results []loopResult
			for range racingBackups {
				var r loopResult
				if err := json.Unmarshal([]byte(c.line(t)), &r); err != nil {
					t.Fatal(err)
				}
				results = append(results, r)
			}
			close(stop)
			swaps.Wait()

			failed := 0
			for i, r := range results {
				if r.Err == "" {
					continue
				}
				failed++
				noSecret(t, fmt.Sprintf("backup %d's error", i), r.Err)
				if !strings.Contains(r.Err, "/volume/data") && !strings.Contains(r.Err, "/volume/sub") {
					t.Errorf("backup %d failed without naming the entry it could not read: %s", i, r.Err)
				}
			}
			t.Logf("%s: %d backups, %d stored, %d failed on a swapped entry", uploader, len(results), len(results)-failed, failed)
			if failed == len(results) {
				t.Fatal("every backup failed: the race says nothing about stored snapshots")
			}
			repo, err := repository.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer repo.Close(ctx)
			snaps, err := repo.Snapshots(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps) < len(results)-failed {
				t.Fatalf("%d snapshots in the repository, %d backups reported one", len(snaps), len(results)-failed)
			}
			if uploader == v1.UploaderRestic {
				checkResticBlobs(t, cfg, restic)
			} else {
				checkKopiaSnapshots(t, repo, snaps)
			}
		})
	}
}

// swapUntil exchanges data and sub with symlinks until stop, alternating the two
// targets. renameat2(RENAME_EXCHANGE) swaps both names at once, so the entry is never
// missing: a backup sees either the volume's own entry or a symlink in its place.
// Each state holds for a fixed amount of work, long enough to fall between a listing
// and an open.
func swapUntil(t *testing.T, f fixture, stop <-chan struct{}) {
	for _, target := range []string{f.outside, jail.WorkPath} {
		for _, name := range []string{"data", "sub"} {
			link := filepath.Join(f.volume, name+linkSuffix(target, f))
			if err := os.Symlink(filepath.Join(target, name), link); err != nil {
				t.Error(err)
				return
			}
		}
	}
	hold := func(path string) {
		for range 200 {
			_, _ = os.Lstat(path)
		}
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		target := []string{f.outside, jail.WorkPath}[i%2]
		for _, name := range []string{"data", "sub"} {
			path := filepath.Join(f.volume, name)
			link := path + linkSuffix(target, f)
			for range 2 { // swap in, hold, swap back, hold
				if err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
					t.Error(err)
					return
				}
				hold(path)
			}
		}
	}
}

func linkSuffix(target string, f fixture) string {
	if target == f.outside {
		return ".to-node"
	}
	return ".to-job"
}

// checkKopiaSnapshots restores every snapshot and looks at every file.
func checkKopiaSnapshots(t *testing.T, repo repository.Repository, snaps []repository.Snapshot) {
	t.Helper()
	ctx := context.Background()
	withData := 0
	for _, s := range snaps {
		dir := t.TempDir()
		if _, err := repo.Restore(ctx, repository.RestoreRequest{SnapshotID: s.ID, TargetDir: dir}); err != nil {
			t.Fatalf("restoring snapshot %s: %v", s.ID, err)
		}
		err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if err != nil || !info.Mode().IsRegular() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			noSecret(t, "snapshot "+s.ID+" file "+path, string(b))
			rel, _ := filepath.Rel(dir, path)
			if want := map[string]string{"data": originalData, "sub/token": originalToken}[rel]; want != "" && string(b) != want {
				t.Errorf("snapshot %s: %s = %q, want the volume's bytes", s.ID, rel, b)
			}
			if rel == "data" {
				withData++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if withData == 0 {
		t.Error("no snapshot holds the volume's data file: the race never let a backup read it")
	}
}

// checkResticBlobs looks for the secrets among the repository's data blobs: restic
// names a data blob by the SHA-256 of its plain text, and each secret is one small
// blob. Restoring 200 snapshots with restic would take minutes; the newest one is
// restored and compared.
func checkResticBlobs(t *testing.T, cfg repository.Config, restic string) {
	t.Helper()
	env := []string{"RESTIC_REPOSITORY=" + filepath.Join(cfg.Store.Filesystem.Path, "restic", cfg.Namespace), "RESTIC_PASSWORD=" + cfg.Password,
		"RESTIC_CACHE_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	cmd := exec.Command(restic, "list", "blobs", "--no-lock")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restic list blobs: %v", err)
	}
	blobs := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if kind, id, ok := strings.Cut(sc.Text(), " "); ok && kind == "data" {
			blobs[id] = true
		}
	}
	id := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, secret := range []string{hostSecret, workSecret} {
		if blobs[id(secret)] {
			t.Errorf("the restic repository holds the bytes of %q", strings.TrimSpace(secret))
		}
	}
	for _, original := range []string{originalData, originalToken} {
		if !blobs[id(original)] {
			t.Errorf("the restic repository does not hold %q: no backup read the volume", strings.TrimSpace(original))
		}
	}
	if len(blobs) < 2 {
		t.Fatalf("restic list blobs gave %d data blobs: %s", len(blobs), out)
	}
}

func backupLoopRole(spec jail.Spec, extra string, _ *bufio.Reader, out io.Writer) error {
	var job loopJob
	if err := json.Unmarshal([]byte(extra), &job); err != nil {
		return err
	}
	if err := jail.Enter(spec); err != nil {
		return err
	}
	ctx := context.Background()
	cfg := repository.Config{
		Store:    repository.Store{Filesystem: &repository.FilesystemStore{Path: spec.Store}},
		Uploader: job.Uploader, Namespace: "tenant", Password: job.Password,
		WorkDir: jail.WorkPath, ResticPath: jail.ResticPath, Owner: "agent@holdfast",
	}
	repo, err := repository.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer repo.Close(ctx)
	enc := json.NewEncoder(out)
	for i := range job.Backups {
		res, err := repo.Backup(ctx, repository.BackupRequest{Dir: jail.VolumePath, SourcePath: "/pvc/data", Tags: map[string]string{"n": strconv.Itoa(i)}})
		if err := enc.Encode(loopResult{SnapshotID: res.SnapshotID, Err: errText(err)}); err != nil {
			return err
		}
	}
	return nil
}
