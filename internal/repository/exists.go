package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/s3"
	"github.com/kopia/kopia/repo/format"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Exists reports whether the store holds a repository for cfg's namespace and uploader,
// without its key: kopia's format blob or restic's config is there. It is how a cluster
// that has no BackupRepository for a namespace (the namespace was deleted, or this is a
// new cluster) finds the backups that are still in the store.
func Exists(ctx context.Context, cfg Config) (bool, error) {
	st := cfg.Store
	marker := format.KopiaRepositoryBlobID
	if cfg.Uploader == v1.UploaderRestic {
		marker = "config"
	}
	if fs := st.Filesystem; fs != nil {
		dir := filepath.Join(fs.Path, cfg.location())
		if cfg.Uploader == v1.UploaderKopia {
			// kopia's filesystem store keeps the format blob at the top, with its
			// extension.
			marker += ".f"
		}
		_, err := os.Stat(filepath.Join(dir, marker))
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, os.ErrNotExist):
			return false, nil
		}
		return false, classify(err, st)
	}
	if st.S3 == nil {
		return false, errors.New("repository config: no store")
	}
	s, err := s3.New(ctx, &s3.Options{
		BucketName: st.S3.Bucket, Prefix: st.S3.key(cfg.location()) + "/",
		Endpoint: st.S3.Endpoint, DoNotUseTLS: st.S3.Insecure, RootCA: st.S3.CABundle,
		AccessKeyID: st.S3.AccessKeyID, SecretAccessKey: st.S3.SecretAccessKey, SessionToken: st.S3.SessionToken,
		Region: st.S3.Region,
	}, false)
	if err != nil {
		return false, classify(err, st)
	}
	defer s.Close(ctx) //nolint:errcheck
	if _, err := s.GetMetadata(ctx, blob.ID(marker)); err != nil {
		if errors.Is(err, blob.ErrBlobNotFound) {
			return false, nil
		}
		return false, classify(fmt.Errorf("looking for a %s repository at %s: %w", cfg.Uploader, cfg.URL(), err), st)
	}
	return true, nil
}
