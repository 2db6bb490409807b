package repository

import (
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/minio"
)

// TestExistsFindsRepositoriesWithoutTheirKey: a cluster that lost a namespace's
// BackupRepository (or is new) finds, with the store's credentials only, which
// repositories the store holds.
func TestExistsFindsRepositoriesWithoutTheirKey(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	stores := map[string]Store{"filesystem": {Filesystem: &FilesystemStore{Path: t.TempDir()}}, "s3": s3Store(s, "backups")}
	for name, st := range stores {
		for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
			t.Run(name+"/"+string(uploader), func(t *testing.T) {
				ctx := ctxFor(t)
				cfg := testConfig(t, st, uploader, "shop")
				if ok, err := Exists(ctx, cfg); err != nil || ok {
					t.Fatalf("before Initialize: %v, %v; want false", ok, err)
				}
				if err := Initialize(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				keyless := cfg
				keyless.Password = ""
				if ok, err := Exists(ctx, keyless); err != nil || !ok {
					t.Errorf("after Initialize: %v, %v; want true", ok, err)
				}
				other := keyless
				other.Namespace = "shop-2"
				if ok, err := Exists(ctx, other); err != nil || ok {
					t.Errorf("another namespace: %v, %v; want false", ok, err)
				}
			})
		}
	}
}
