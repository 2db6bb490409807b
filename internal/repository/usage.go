package repository

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	miniogo "github.com/minio/minio-go/v7"
)

// Usage is what a repository occupies in its store: every object under its location,
// as the store lists them. That is the data after deduplication, compression and
// encryption, with the uploader's indexes, snapshot manifests, locks and logs: what
// the store's owner pays for (the escrowed key, beside the location, is not in it).
type Usage struct {
	Bytes   int64
	Objects int64
}

// storeUsage lists the objects under rel in st and adds up their sizes. On a
// filesystem store it counts regular files and follows no symbolic link.
func storeUsage(ctx context.Context, st Store, rel string) (Usage, error) {
	var u Usage
	if st.S3 != nil {
		c, err := st.S3.client()
		if err != nil {
			return u, classify(err, st)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops the listing when an error ends the loop early
		for obj := range c.ListObjects(ctx, st.S3.Bucket, miniogo.ListObjectsOptions{Prefix: st.S3.key(rel) + "/", Recursive: true}) {
			if obj.Err != nil {
				return Usage{}, classify(obj.Err, st)
			}
			u.Bytes += obj.Size
			u.Objects++
		}
		return u, ctx.Err()
	}
	if st.Filesystem == nil {
		return u, errors.New("repository config: no store")
	}
	err := filepath.WalkDir(filepath.Join(st.Filesystem.Path, rel), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil // removed by a maintenance pass while we walked
		}
		if err != nil {
			return err
		}
		u.Bytes += info.Size()
		u.Objects++
		return nil
	})
	if err != nil {
		return Usage{}, classify(err, st)
	}
	return u, nil
}
