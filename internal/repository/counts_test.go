package repository

import (
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// A backup of a volume that did not change counts every file, as the first one did:
// kopia counts the files it finds unchanged (its "cached" files) apart from the ones
// it reads. A count of 0 would make the manager flag a good backup as one that lost
// its files (NoFiles), which a restore of the latest backup then passes over.
func TestAnUnchangedBackupCountsEveryFile(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			writeTree(t, src, map[string]string{"a": "alpha", "d/b": "bravo", "d/e/c": "charlie"})
			first, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/same"})
			if err != nil {
				t.Fatal(err)
			}
			again, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/same"})
			if err != nil {
				t.Fatal(err)
			}
			if again.TotalFiles != first.TotalFiles || again.TotalBytes != first.TotalBytes {
				t.Errorf("unchanged backup counted %d files, %d bytes; the first %d files, %d bytes",
					again.TotalFiles, again.TotalBytes, first.TotalFiles, first.TotalBytes)
			}
		})
	}
}
