package repository

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/confinedfs"
)

// SnapshotHost is the host recorded on every snapshot. Together with the namespace (the
// kopia user name) and the source path it is the source identity that chains backups.
const SnapshotHost = "holdfast"

// ManagerOwner is the kopia client identity (user@host) of the manager. Initialize
// makes the Config.Owner the repository's maintenance owner, so only a client opened
// with the same Owner can run kopia maintenance.
const ManagerOwner = "manager@holdfast"

// Config says which repository to reach and how.
type Config struct {
	// Store is where the repository lives.
	Store Store
	// Uploader is the repository format.
	Uploader v1.Uploader
	// Namespace owns the repository; it is part of the path and the kopia user name.
	Namespace string
	// Password is the repository's own encryption key (see GenerateKey).
	Password string
	// WorkDir is a private directory (a memory-backed volume in a pod) under which each
	// repository gets a 0700 directory for the kopia config file (it holds the store's
	// secret key), caches and the restic CA file. Never a shared place.
	WorkDir string
	// ResticPath is the restic binary; empty means "restic" on $PATH.
	ResticPath string
	// Owner is this client's kopia identity, user@host (default ManagerOwner).
	Owner string
	// CacheSizeBytes bounds the kopia content and metadata caches (default 256 MiB each).
	CacheSizeBytes int64
	// CacheDir, when set, is where kopia (or restic) keeps this repository's cache, so
	// that it outlives the open: the next open reads indexes and directory manifests
	// from it instead of the store. The cache holds only what the store holds
	// (encrypted); give each repository its own, used by one process at a time. Empty:
	// a cache in the private directory under WorkDir.
	CacheDir string
	// ResticDataLockWait, when set, is how long a restic backup or restore waits for
	// a lock another process holds before it ends with ErrLocked (default 30 min, see
	// resticDataLockWait). Tests shorten it.
	ResticDataLockWait time.Duration
}

// Repository is an open repository. It is safe for one goroutine at a time per
// operation kind; open it once and reuse it (opening costs a key derivation).
type Repository interface {
	// Backup snapshots req.Dir as req.SourcePath, incremental to the previous
	// snapshot of the same source. Cancelling ctx stops it with ctx's error.
	Backup(ctx context.Context, req BackupRequest) (BackupResult, error)
	// Restore writes a snapshot's files into req.TargetDir (which must exist).
	Restore(ctx context.Context, req RestoreRequest) (RestoreResult, error)
	// Snapshots lists the snapshots of sourcePath, or of every source of the
	// namespace when sourcePath is empty, oldest first.
	Snapshots(ctx context.Context, sourcePath string) ([]Snapshot, error)
	// Delete forgets a snapshot. Deleting a snapshot that does not exist succeeds,
	// so a finalizer can always finish. Space returns at the next maintenance.
	Delete(ctx context.Context, snapshotID string) error
	// Maintain runs maintenance: kopia Quick or Full, restic Prune.
	Maintain(ctx context.Context, req MaintenanceRequest) (MaintenanceResult, error)
	// Usage lists the repository's objects in the store and adds up their sizes.
	Usage(ctx context.Context) (Usage, error)
	// Stat describes the entry at path of a snapshot: "" is the root. path is
	// relative to the snapshot root, "/"-separated, validated with ValidateBrowsePath.
	// A path the snapshot lacks is ErrPathNotInSnapshot; an unknown snapshot is
	// ErrSnapshotNotFound. A symlink is described, never followed, also on the way.
	Stat(ctx context.Context, snapshotID, path string) (Entry, error)
	// List lists the entries of the directory at path, sorted by name; for a file
	// (or a symlink, or a special file) it lists that entry alone.
	List(ctx context.Context, snapshotID, path string) ([]Entry, error)
	// Tar writes the entry at path, and everything below a directory, as an
	// uncompressed tar stream to w; names in the stream start with the entry's own
	// name (the root: "."). Special files (FIFOs, devices, sockets) are left out and
	// counted in TarResult.Skipped. It streams (no file is held in memory) and stops
	// with ctx's error when ctx is cancelled, or with w's error when w fails.
	Tar(ctx context.Context, snapshotID, path string, w io.Writer) (TarResult, error)
	// URL is where the repository lives (s3://bucket/prefix/kopia/<namespace>/).
	URL() string
	// Close releases the repository and removes the kopia config file.
	Close(ctx context.Context) error
}

// BackupRequest is one snapshot to take.
type BackupRequest struct {
	// Dir is the directory to read.
	Dir string
	// SourcePath is the source identity inside the namespace (/pvc/<claim>, ...).
	SourcePath string
	// Tags are recorded with the snapshot. Keys and values must not contain ','.
	Tags map[string]string
	// Parent is the snapshot the backup is incremental to: empty for the newest
	// complete snapshot of SourcePath, NoParent for none, or a snapshot ID (none when
	// that snapshot is not one of SourcePath's).
	Parent string
	// ExcludeCaches leaves out the contents of each cache directory (one holding a
	// CACHEDIR.TAG with the signature), keeping the directory and its tag, and counts
	// the directories in Skipped.CacheDirectories. Off, every file is backed up.
	ExcludeCaches bool
	// Progress, if set, is called every ProgressInterval and once at the end.
	Progress func(Progress)
}

// NoParent as BackupRequest.Parent makes a backup read every file: the store still
// keeps each piece of data once.
const NoParent = "none"

// ProgressInterval is how often Backup and Restore publish progress.
const ProgressInterval = time.Second

// Progress counts work done so far.
type Progress struct {
	BytesDone, TotalBytes, FilesDone, TotalFiles int64
}

// BackupResult describes a stored snapshot.
type BackupResult struct {
	SnapshotID       string
	ParentSnapshotID string
	// BytesUploaded is the new data sent to the store (the incremental size).
	BytesUploaded int64
	// BytesReused are the bytes of large files changed since the parent snapshot
	// that were taken from it without being split and hashed again: their regions
	// whose bytes did not change (kopia only; see kopia_reuse.go).
	BytesReused int64
	TotalBytes  int64
	TotalFiles  int64
	// Skipped counts the entries of the volume the snapshot does not hold.
	Skipped Skipped
}

// Skipped counts entries of a volume that a backup left out of its snapshot, by why.
// None of them fails the backup. A file deleted before its directory was listed is
// not in the snapshot either, and not counted: it was gone before it was seen.
type Skipped struct {
	// Vanished entries were deleted or renamed away between the listing of their
	// directory and their reading: a live volume's temporary files, rotated logs,
	// recycled WAL segments.
	Vanished int64
	// ChangedType entries were replaced by another kind of entry (a file by a
	// symlink, FIFO or directory) between listing and reading.
	ChangedType int64
	// Sockets, FIFOs and Devices are special files the uploader does not store.
	Sockets, FIFOs, Devices int64
	// CacheDirectories are the directories whose contents BackupRequest.ExcludeCaches
	// left out on purpose (their entries are not counted one by one).
	CacheDirectories int64
}

// Total is the number of entries and cache directories skipped for any reason.
func (s Skipped) Total() int64 {
	return s.Vanished + s.ChangedType + s.Sockets + s.FIFOs + s.Devices + s.CacheDirectories
}

// RestoreRequest is one snapshot to restore.
type RestoreRequest struct {
	SnapshotID string
	TargetDir  string
	// Paths, when set, are the only files and directories of the snapshot restored
	// (relative to its root, "/"-separated, validated as the API does): each at its own
	// place, a directory with everything below it. A path the snapshot lacks fails the
	// restore before anything is written.
	Paths []string
	// SubPath, when set, is the directory of TargetDir restored into, made if missing;
	// nothing is written outside it (confinedfs.Writer.Sub).
	SubPath  string
	Progress func(Progress)
}

// openTarget is the confined writer of req's target: TargetDir, or its SubPath.
func openTarget(req RestoreRequest) (*confinedfs.Writer, error) {
	w, err := confinedfs.Open(req.TargetDir)
	if err != nil || req.SubPath == "" {
		return w, err
	}
	defer w.Close()
	sub, err := w.Sub(req.SubPath)
	if err != nil {
		return nil, fmt.Errorf("restoring into %s of the volume: %w", req.SubPath, err)
	}
	return sub, nil
}

// RestoreResult counts what was restored (restic counts directories as files).
type RestoreResult struct {
	TotalBytes int64
	TotalFiles int64
	// NotRestored counts what the snapshot holds but the restore did not give back.
	NotRestored NotRestored
}

// NotRestored counts, by why, what a restore left out. None of it fails the restore.
type NotRestored struct {
	// FIFOs are named pipes the snapshot holds that the restore could not make or
	// place: restic's, under a name that is not UTF-8 (see resticTree.lostFIFOs).
	FIFOs int64
	// Devices are device nodes the restore may not make (the data mover has no
	// CAP_MKNOD) or whose device number the snapshot's stream lacks (restic dump).
	Devices int64
	// Attributes are extended attributes the target's file system or the restore's
	// privileges refused (no user_xattr, trusted.* without CAP_SYS_ADMIN, ...).
	Attributes int64
	// Other are entries of kinds a restore does not recreate (sockets).
	Other int64
}

// Total is the number of entries and attributes left out for any reason.
func (n NotRestored) Total() int64 { return n.FIFOs + n.Devices + n.Attributes + n.Other }

// Snapshot is one stored snapshot.
type Snapshot struct {
	ID         string
	SourcePath string
	StartTime  time.Time
	Tags       map[string]string
	// Size is the total size of the snapshot's files.
	Size int64
}

// MaintenanceMode is the kind of maintenance pass; the values match the API's
// MaintenanceResult.mode.
type MaintenanceMode string

const (
	// MaintenanceQuick is kopia quick maintenance (index compaction, no GC).
	MaintenanceQuick MaintenanceMode = "Quick"
	// MaintenanceFull is kopia full maintenance (snapshot GC, pack rewrite).
	MaintenanceFull MaintenanceMode = "Full"
	// MaintenancePrune is restic prune.
	MaintenancePrune MaintenanceMode = "Prune"
)

// MaintenanceRequest is one maintenance pass. For restic every mode is a prune.
type MaintenanceRequest struct {
	Mode MaintenanceMode
	// UnsafeReclaimNow drops kopia's safety margins (SafetyNone, but no rewrite of
	// fresh contents) so that deleted data is reclaimed within seconds: a full pass
	// marks it deleted, the next full pass at least a second later drops it and its
	// pack. Only for a single-writer test repository: with a concurrent writer it can
	// delete data that writer still needs.
	UnsafeReclaimNow bool
}

// MaintenanceResult is what a pass did.
type MaintenanceResult struct {
	Mode           MaintenanceMode
	StartTime      time.Time
	CompletionTime time.Time
	Message        string
}

// ModeFor says which maintenance a repository of uploader needs when the last full
// pass (zero: never) was at lastFull: kopia runs Full once a day and Quick otherwise,
// restic always prunes.
func ModeFor(uploader v1.Uploader, lastFull, now time.Time) MaintenanceMode {
	if uploader == v1.UploaderRestic {
		return MaintenancePrune
	}
	if lastFull.IsZero() || now.Sub(lastFull) >= 24*time.Hour {
		return MaintenanceFull
	}
	return MaintenanceQuick
}

// GenerateKey returns a new random repository key (256 bits, base64url).
func GenerateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a repository key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Initialize creates a new, empty repository. It refuses, with ErrExistingData, when
// anything at all is stored at the repository's location: it never writes over data.
func Initialize(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := preflight(ctx, cfg.Store); err != nil {
		return err
	}
	empty, err := locationEmpty(ctx, cfg.Store, cfg.location())
	if err != nil {
		return classify(err, cfg.Store)
	}
	if !empty {
		return newError(ErrExistingData, fmt.Sprintf("%s already holds data that is not a usable %s repository; Holdfast does not initialise over existing data, so move that data away or point the storage location elsewhere", cfg.URL(), cfg.Uploader), nil)
	}
	switch cfg.Uploader {
	case v1.UploaderKopia:
		return initializeKopia(ctx, cfg)
	case v1.UploaderRestic:
		return initializeRestic(ctx, cfg)
	}
	return fmt.Errorf("unknown uploader %q", cfg.Uploader)
}

// Open connects to an existing repository. Errors are *Error values: ErrNotInitialized
// when there is no repository yet, ErrWrongKey, ErrDamaged, or a store error.
func Open(ctx context.Context, cfg Config) (Repository, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := preflight(ctx, cfg.Store); err != nil {
		return nil, err
	}
	switch cfg.Uploader {
	case v1.UploaderKopia:
		return openKopia(ctx, cfg)
	case v1.UploaderRestic:
		return openRestic(ctx, cfg)
	}
	return nil, fmt.Errorf("unknown uploader %q", cfg.Uploader)
}

// URL is where the repository lives.
func (c Config) URL() string { return c.Store.URL(c.location()) }

// location is the repository's path relative to the store's root.
func (c Config) location() string { return string(c.Uploader) + "/" + c.Namespace }

func (c Config) owner() string {
	if c.Owner != "" {
		return c.Owner
	}
	return ManagerOwner
}

func (c Config) cacheSize() int64 {
	if c.CacheSizeBytes > 0 {
		return c.CacheSizeBytes
	}
	return 256 << 20
}

func (c Config) validate() error {
	switch {
	case c.Namespace == "":
		return errors.New("repository config: namespace is empty")
	case c.Password == "":
		return errors.New("repository config: password is empty")
	case c.WorkDir == "":
		return errors.New("repository config: work directory is empty")
	case c.Store.S3 == nil && c.Store.Filesystem == nil:
		return errors.New("repository config: no store")
	}
	return nil
}

// privateDir returns (creating it 0700) the repository's own directory under WorkDir,
// named after the uploader, namespace and store so that two stores never share it.
func (c Config) privateDir() (string, error) {
	sum := sha256.Sum256([]byte(c.URL()))
	dir := filepath.Join(c.WorkDir, string(c.Uploader), c.Namespace+"-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating the repository work directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}
