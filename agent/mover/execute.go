package mover

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// AgentOwner is the kopia client identity of the agents' data movers.
const AgentOwner = "agent@holdfast"

// Execute is the real Executor: it opens the repository through internal/repository
// (the same code the manager uses) and runs the backup or the restore.
func Execute(ctx context.Context, job Job, progress func(Progress)) (Result, error) {
	loc := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "location"}, Spec: job.Location}
	var creds *corev1.Secret
	if job.Credentials != nil {
		creds = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "credentials"}, Data: job.Credentials}
	}
	store, err := repository.StoreFromLocation(loc, creds)
	if err != nil {
		return Result{}, err
	}
	repo, err := repository.Open(ctx, repository.Config{
		Store:      store,
		Uploader:   job.Uploader,
		Namespace:  job.Namespace,
		Password:   job.Password,
		WorkDir:    job.WorkDir,
		CacheDir:   job.CacheDir,
		ResticPath: job.ResticPath,
		Owner:      AgentOwner,
		// A backup or restore that runs out of this wait ends with ErrLocked, which
		// the agent retries later (Result.Reason).
		ResticDataLockWait: job.ResticLockWait,
	})
	if err != nil {
		return Result{}, err
	}
	defer repo.Close(context.WithoutCancel(ctx))

	report := func(p repository.Progress) {
		progress(Progress{BytesDone: p.BytesDone, TotalBytes: p.TotalBytes, FilesDone: p.FilesDone, TotalFiles: p.TotalFiles})
	}
	switch job.Kind {
	case KindBackup:
		res, err := repo.Backup(ctx, repository.BackupRequest{Dir: job.Dir, SourcePath: job.SourcePath, Tags: job.Tags, Parent: job.Parent,
			ExcludeCaches: job.ExcludeCaches, Progress: report})
		if err != nil {
			return Result{}, err
		}
		var skipped *Skipped
		if s := res.Skipped; s.Total() > 0 {
			skipped = &Skipped{Vanished: s.Vanished, ChangedType: s.ChangedType, Sockets: s.Sockets, FIFOs: s.FIFOs, Devices: s.Devices,
				CacheDirectories: s.CacheDirectories}
		}
		return Result{
			Skipped:          skipped,
			SnapshotID:       res.SnapshotID,
			ParentSnapshotID: res.ParentSnapshotID,
			BytesUploaded:    res.BytesUploaded,
			BytesReused:      res.BytesReused,
			Progress: Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes,
				FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles},
		}, nil
	case KindRestore:
		res, err := repo.Restore(ctx, repository.RestoreRequest{SnapshotID: job.SnapshotID, TargetDir: job.Dir,
			Paths: job.Paths, SubPath: job.SubPath, Progress: report})
		if err != nil {
			return Result{}, err
		}
		var notRestored *NotRestored
		if n := res.NotRestored; n.Total() > 0 {
			notRestored = &NotRestored{FIFOs: n.FIFOs, Devices: n.Devices, Attributes: n.Attributes, Other: n.Other}
		}
		return Result{NotRestored: notRestored, Progress: Progress{BytesDone: res.TotalBytes, TotalBytes: res.TotalBytes,
			FilesDone: res.TotalFiles, TotalFiles: res.TotalFiles}}, nil
	}
	return Result{}, fmt.Errorf("unknown job kind %q", job.Kind)
}
