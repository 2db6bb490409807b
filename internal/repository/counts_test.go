package repository

import (
	"sync"
	"testing"
	"time"

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

// While a kopia backup runs, its progress carries the volume's totals, counted by
// Holdfast's own walk of the volume: kopia's estimate of them, a second walk, is off
// (kopiaProgress.Enabled), so without these totals a running backup's
// status.progress would have none. The upload waits at its first file until a
// progress report came, and the report is checked.
func TestKopiaBackupProgressHasTheVolumesTotals(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	files := map[string]string{"a": "alpha", "d/b": "bravo", "d/e/c": "charlie"}
	writeTree(t, src, files)
	var size int64
	for _, c := range files {
		size += int64(len(c))
	}
	reported := make(chan struct{})
	var first Progress
	var once sync.Once
	beforeOpen = func(string) {
		select {
		case <-reported:
		case <-time.After(time.Minute):
		}
	}
	t.Cleanup(func() { beforeOpen = nil })
	_, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/progress", Progress: func(p Progress) {
		once.Do(func() { first = p; close(reported) })
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Holdfast's own files (attributes, special files, links) count too, if any.
	if first.TotalFiles < int64(len(files)) || first.TotalFiles > int64(len(files))+3 || first.TotalBytes < size {
		t.Errorf("progress during the backup %+v, want the volume's %d files and %d bytes as totals", first, len(files), size)
	} else if first.FilesDone >= first.TotalFiles {
		t.Errorf("progress during the backup %+v: the upload was held at its first file", first)
	}
}
