// Package mover runs one volume's data movement (a backup or a restore) in a child
// process of the agent binary, so that the memory a large volume needs is returned to
// the node when it is done, and a crash in one volume cannot take the agent down.
//
// The parent writes a Job as JSON on the child's standard input and reads Events, one
// JSON object a line, from its standard output; the child's standard error is the log.
package mover

import (
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Kind is what a job does.
type Kind string

const (
	// KindBackup snapshots Dir as SourcePath into the repository.
	KindBackup Kind = "backup"
	// KindRestore restores SnapshotID into Dir, confined to it.
	KindRestore Kind = "restore"
)

// Job is everything the child needs: it reads no Kubernetes object itself.
type Job struct {
	Kind Kind `json:"kind"`
	// Uploader is the repository format: kopia or restic.
	Uploader v1.Uploader `json:"uploader"`
	// Namespace is the repository's namespace (the source namespace for restores).
	Namespace string `json:"namespace"`
	// Location is the spec of the BackupStorageLocation holding the repository.
	Location v1.BackupStorageLocationSpec `json:"location"`
	// Credentials are the data of the location's credentials Secret, if any.
	Credentials map[string][]byte `json:"credentials,omitempty"`
	// Password is the repository's own key.
	Password string `json:"password"`
	// WorkDir is a private directory for repository config, and for caches when
	// CacheDir is empty.
	WorkDir string `json:"workDir"`
	// CacheDir, when set, is where the repository's cache goes (see
	// repository.Config.CacheDir): for a backup, the cache kept from earlier jobs; for a
	// restore, an empty directory on the same disk. This job has it to itself.
	CacheDir string `json:"cacheDir,omitempty"`
	// ResticPath is the restic binary.
	ResticPath string `json:"resticPath,omitempty"`
	// ResticLockWait, when set, is how long restic waits for a lock another process
	// holds (repository.Config.ResticDataLockWait); zero is the repository's default.
	ResticLockWait time.Duration `json:"resticLockWait,omitempty"`
	// Dir is the volume directory to read (backup) or to write into (restore).
	Dir string `json:"dir"`
	// Root, when set, is the --host-path-roots directory of a hostPath
	// PersistentVolume and Dir the path below it: the jail opens Dir from Root
	// without following any symbolic link (package hostpath).
	Root string `json:"root,omitempty"`
	// SourcePath is the volume's source identity.
	SourcePath string `json:"sourcePath"`
	// Tags are recorded with a backup's snapshot.
	Tags map[string]string `json:"tags,omitempty"`
	// Parent is what a backup is incremental to (repository.BackupRequest.Parent).
	Parent string `json:"parent,omitempty"`
	// ExcludeCaches leaves out the contents of the volume's cache directories
	// (repository.BackupRequest.ExcludeCaches), from the PodVolumeBackup's spec.files.
	ExcludeCaches bool `json:"excludeCaches,omitempty"`
	// SnapshotID is the snapshot to restore.
	SnapshotID string `json:"snapshotID,omitempty"`
	// Paths, when set, are the only files and directories of the snapshot a restore
	// writes (repository.RestoreRequest.Paths).
	Paths []string `json:"paths,omitempty"`
	// SubPath, when set, is the directory of Dir a restore writes into, confined to
	// Dir (repository.RestoreRequest.SubPath).
	SubPath string `json:"subPath,omitempty"`
}

// Progress is a point-in-time count of the work.
type Progress struct {
	BytesDone  int64 `json:"bytesDone"`
	TotalBytes int64 `json:"totalBytes"`
	FilesDone  int64 `json:"filesDone"`
	TotalFiles int64 `json:"totalFiles"`
}

// Result is how a job ended.
type Result struct {
	// SnapshotID is the snapshot a backup made.
	SnapshotID string `json:"snapshotID,omitempty"`
	// ParentSnapshotID is the snapshot a backup was incremental to.
	ParentSnapshotID string `json:"parentSnapshotID,omitempty"`
	// BytesUploaded is the new data a backup sent to the store.
	BytesUploaded int64 `json:"bytesUploaded"`
	// BytesReused are the bytes of large changed files taken from the parent snapshot.
	BytesReused int64 `json:"bytesReused,omitempty"`
	// Progress is the final count.
	Progress Progress `json:"progress"`
	// Skipped counts what a backup left out of its snapshot, by why; nil when nothing.
	Skipped *Skipped `json:"skipped,omitempty"`
	// NotRestored counts what a restore did not give back, by why; nil when nothing.
	NotRestored *NotRestored `json:"notRestored,omitempty"`
	// Canceled is true when the job stopped because it was asked to.
	Canceled bool `json:"canceled,omitempty"`
	// Error is one readable sentence when the job failed.
	Error string `json:"error,omitempty"`
	// Reason is the kind of a repository error that failed the job
	// (repository.Error.Reason, e.g. RepositoryLocked), empty for any other failure:
	// it lets the agent tell "try again later" from a failure.
	Reason string `json:"reason,omitempty"`
}

// Skipped counts entries a backup left out (repository.Skipped).
type Skipped struct {
	// Vanished entries were deleted between the listing of their directory and their reading.
	Vanished int64 `json:"vanished,omitempty"`
	// ChangedType entries were replaced by another kind of entry while read.
	ChangedType int64 `json:"changedType,omitempty"`
	// Sockets, FIFOs and Devices are special files the uploader does not store.
	Sockets int64 `json:"sockets,omitempty"`
	FIFOs   int64 `json:"fifos,omitempty"`
	Devices int64 `json:"devices,omitempty"`
	// CacheDirectories are the cache directories whose contents were left out on
	// purpose (Job.ExcludeCaches).
	CacheDirectories int64 `json:"cacheDirectories,omitempty"`
}

// NotRestored counts what a restore left out (repository.NotRestored).
type NotRestored struct {
	// FIFOs are named pipes the restore could not make (repository.NotRestored).
	FIFOs int64 `json:"fifos,omitempty"`
	// Devices are device nodes the data mover may not make or whose number is unknown.
	Devices int64 `json:"devices,omitempty"`
	// Attributes are extended attributes the volume's file system refused.
	Attributes int64 `json:"attributes,omitempty"`
	// Other are entries of kinds a restore does not recreate (sockets).
	Other int64 `json:"other,omitempty"`
}

// Event is one line the child writes: a progress update or the result.
type Event struct {
	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
}
