package repository

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/fs/virtualfs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/upload"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/confinedfs"
)

// craftSnapshot writes a snapshot of the namespace's repository whose root holds
// entries with the given names, as a tampered repository or a hostile client could;
// Holdfast never writes such names itself.
func craftSnapshot(t *testing.T, cfg Config, names ...string) string {
	t.Helper()
	ctx := context.Background()
	st, err := kopiaStorage(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(t.TempDir(), "attacker.config")
	if err := repo.Connect(ctx, configFile, st, cfg.Password, &repo.ConnectOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := repo.Open(ctx, configFile, cfg.Password, &repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(ctx)
	var entries []fs.Entry
	for _, n := range names {
		entries = append(entries, virtualfs.StreamingFileFromReader(n, io.NopCloser(strings.NewReader("pwned\n"))))
	}
	root := virtualfs.NewStaticDirectory("root", entries)
	src := snapshot.SourceInfo{Host: SnapshotHost, UserName: cfg.Namespace, Path: "/evil"}
	var id string
	err = repo.WriteSession(ctx, rep, repo.WriteSessionOptions{Purpose: "test: crafted snapshot"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		u := upload.NewUploader(w)
		man, err := u.Upload(ctx, root, policy.BuildTree(nil, policy.DefaultPolicy), src)
		if err != nil {
			return err
		}
		mid, err := snapshot.SaveSnapshot(ctx, w, man)
		id = string(mid)
		return err
	})
	if err != nil {
		t.Fatalf("crafting the snapshot: %v", err)
	}
	return id
}

// TestKopiaRestoreRefusesEntriesThatEscape restores snapshots whose entry names climb
// out of the target: the restore fails and nothing outside the target is written.
func TestKopiaRestoreRefusesEntriesThatEscape(t *testing.T) {
	ctx := context.Background()
	cfg := Config{
		Store:     Store{Filesystem: &FilesystemStore{Path: t.TempDir()}},
		Uploader:  v1.UploaderKopia,
		Namespace: "victim",
		Password:  "a repository key for this test",
		WorkDir:   t.TempDir(),
	}
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../escape", "../../escape", "a/../../escape"} {
		t.Run(name, func(t *testing.T) {
			id := craftSnapshot(t, cfg, name)
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			parent := t.TempDir()
			target := filepath.Join(parent, "volume", "data")
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err = r.Restore(ctx, RestoreRequest{SnapshotID: id, TargetDir: target})
			if !errors.Is(err, confinedfs.ErrEscape) {
				t.Errorf("restore of entry %q: err = %v, want ErrEscape", name, err)
			}
			var outside []string
			_ = filepath.WalkDir(parent, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					outside = append(outside, p)
				}
				return nil
			})
			if len(outside) != 0 {
				t.Errorf("files written by the restore: %v", outside)
			}
		})
	}
}
