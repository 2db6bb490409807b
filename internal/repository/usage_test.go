package repository

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/minio"
)

// TestUsageIsTheRepositorysOwnObjects: a repository's usage is every object under its
// location and nothing of the repository beside it whose namespace starts with the
// same letters (shop and shopfront share a prefix in S3 listings). Each figure is
// checked against a listing made without Holdfast's code: MinIO's own client for S3,
// find(1) for a filesystem store.
func TestUsageIsTheRepositorysOwnObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	fsRoot := t.TempDir()
	stores := []struct {
		name  string
		store Store
		// measure is the size of the repository's objects, read by other means.
		measure func(t *testing.T, ctx context.Context, cfg Config) (bytes, objects int64)
	}{
		{"s3", s3Store(s, "backups"), func(t *testing.T, ctx context.Context, cfg Config) (int64, int64) {
			prefix := "cluster-a/" + cfg.location() + "/"
			size, err := s.Size(ctx, "backups", prefix)
			if err != nil {
				t.Fatal(err)
			}
			return size, -1
		}},
		{"filesystem", Store{Filesystem: &FilesystemStore{Path: fsRoot}}, func(t *testing.T, ctx context.Context, cfg Config) (int64, int64) {
			out, err := exec.CommandContext(ctx, "find", filepath.Join(fsRoot, cfg.location()), "-type", "f", "-printf", "%s\n").Output()
			if err != nil {
				t.Fatal(err)
			}
			var size, n int64
			for _, line := range strings.Fields(string(out)) {
				v, err := strconv.ParseInt(line, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				size += v
				n++
			}
			return size, n
		}},
	}
	for _, st := range stores {
		for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
			t.Run(st.name+"/"+string(uploader), func(t *testing.T) {
				ctx := ctxFor(t)
				open := func(ns string, files map[string]string) Repository {
					t.Helper()
					cfg := testConfig(t, st.store, uploader, ns)
					if err := Initialize(ctx, cfg); err != nil {
						t.Fatal(err)
					}
					r, err := Open(ctx, cfg)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = r.Close(context.Background()) })
					src := t.TempDir()
					writeTree(t, src, files)
					if _, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/data"}); err != nil {
						t.Fatal(err)
					}
					return r
				}
				const big = 2 << 20
				shop := open("shop", map[string]string{"a": "alpha"})
				open("shopfront", map[string]string{"big": randomText(t, big)})

				u, err := shop.Usage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				wantBytes, wantObjects := st.measure(t, ctx, Config{Uploader: uploader, Namespace: "shop"})
				t.Logf("shop uses %d bytes in %d objects", u.Bytes, u.Objects)
				if u.Bytes != wantBytes || (wantObjects >= 0 && u.Objects != wantObjects) {
					t.Errorf("usage %d bytes in %d objects, the store lists %d bytes in %d objects (-1: not counted)", u.Bytes, u.Objects, wantBytes, wantObjects)
				}
				if u.Bytes <= 0 || u.Bytes >= big {
					t.Errorf("usage %d bytes: want more than 0 and less than shopfront's %d bytes of data", u.Bytes, big)
				}

				// A backup of new data grows the usage by at least that data.
				src := t.TempDir()
				writeTree(t, src, map[string]string{"more": randomText(t, big)})
				if _, err := shop.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/more"}); err != nil {
					t.Fatal(err)
				}
				after, err := shop.Usage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if after.Bytes-u.Bytes < big || after.Objects <= u.Objects {
					t.Errorf("after backing up %d new bytes the usage went from %+v to %+v", big, u, after)
				}
			})
		}
	}
}
