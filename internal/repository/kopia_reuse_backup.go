package repository

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/compression"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/snapshotfs"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
)

// How Backup uses the reusing writer (kopia_reuse.go). A regular file of at least
// reuseMinSize bytes whose metadata changed since the parent snapshot (kopia's own
// cache takes the unchanged ones first) is written by writeReusing instead of kopia's
// uploader, through the uploader's hook for a ready entry (snapshot.HasDirEntryOrNil
// on volumeFile): the uploader checks that the entry's object exists and stores the
// entry as is. Smaller files keep kopia's path.
//
// The maps writeReusing needs are kept in the snapshot itself, in a file at its root
// (kopiarestore.ReuseName) that the next backup reads from its parent: one record per
// large file, naming the file's object and a fingerprint of each of its chunks. The
// file is added to the root directory after the upload (the maps are made during it).
// A record is trusted only for the object it names, and only when that object's index
// covers the recorded size with one chunk per fingerprint (previousEntries); a file
// that kopia took unchanged from the parent keeps its record when the new snapshot
// stores the same object at the same path. A missing or unreadable list costs speed,
// never correctness: then every large file is split and hashed whole.

// reuseMinSize is the size from which a file is written by the reusing writer. Below
// it a file has too few chunks (kopia's default splitter cuts 4 MiB on average) for
// reuse to pay for the lookup of its previous object's index.
var reuseMinSize int64 = 64 << 20

// afterReuseStat, when set by a test, runs between the size the reusing writer takes
// of a file and its reading: the file changes there as a live one does.
var afterReuseStat func(path string)

// reuseList is the content of kopiarestore.ReuseName.
type reuseList struct {
	Version int           `json:"version"`
	Files   []reuseRecord `json:"files"`
}

const reuseListVersion = 1

// reuseRecord is one large file's map.
type reuseRecord struct {
	// Path is the file's path below the volume's root, with slashes, as on disk.
	Path string    `json:"path"`
	Size int64     `json:"size"`
	Map  *reuseMap `json:"map"`
}

// MarshalJSON stores the fingerprints as one byte string (base64 in JSON).
func (m *reuseMap) MarshalJSON() ([]byte, error) {
	sums := make([]byte, 0, 16*len(m.Sums))
	for _, s := range m.Sums {
		sums = append(sums, s[:]...)
	}
	return json.Marshal(storedReuseMap{Object: m.Object, Splitter: m.Splitter, PartSize: m.PartSize, Fingerprint: m.Fingerprint, Sums: sums})
}

func (m *reuseMap) UnmarshalJSON(b []byte) error {
	var s storedReuseMap
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if len(s.Sums)%16 != 0 {
		return fmt.Errorf("%d bytes of fingerprints are not a whole number of 16-byte ones", len(s.Sums))
	}
	*m = reuseMap{Object: s.Object, Splitter: s.Splitter, PartSize: s.PartSize, Fingerprint: s.Fingerprint}
	for i := 0; i < len(s.Sums); i += 16 {
		m.Sums = append(m.Sums, [16]byte(s.Sums[i:i+16]))
	}
	return nil
}

type storedReuseMap struct {
	Object      object.ID `json:"object"`
	Splitter    string    `json:"splitter"`
	PartSize    int64     `json:"partSize,omitempty"`
	Fingerprint string    `json:"fingerprint"`
	Sums        []byte    `json:"sums"`
}

// reuser writes the large files of one backup and keeps their maps.
type reuser struct {
	dir string // the volume's directory
	pol *policy.Policy
	opt reuseOptions // without the per-file Name and Compressor

	// w and prev are set by begin, before the upload.
	w        repo.RepositoryWriter
	prev     map[string]*reuseRecord
	progress func(int64)

	mu   sync.Mutex
	next map[string]*reuseRecord

	// files and bytes count the files written here: kopia's stats do not.
	files, bytes atomic.Int64
	// reused are the bytes taken from the parent snapshot without being hashed again.
	reused atomic.Int64
}

// newReuser prepares the writing of dir's large files into rep under pol.
func newReuser(rep repo.DirectRepository, dir string, pol *policy.Policy) (*reuser, error) {
	seed, err := rep.DeriveKey("holdfast-reuse-fingerprint", 8)
	if err != nil {
		return nil, fmt.Errorf("deriving the fingerprint seed: %w", err)
	}
	splitterName := pol.SplitterPolicy.SplitterForFile(nil)
	if splitterName == "" {
		splitterName = rep.ObjectFormat().Splitter
	}
	return &reuser{
		dir: dir,
		pol: pol,
		opt: reuseOptions{
			Splitter:           splitterName,
			PartSize:           pol.UploadPolicy.ParallelUploadAboveSize.OrDefault(-1),
			MetadataCompressor: pol.MetadataCompressionPolicy.MetadataCompressor(),
			Seed:               binary.LittleEndian.Uint64(seed),
		},
		next: map[string]*reuseRecord{},
	}, nil
}

// begin readies the upload through w: it reads the maps of parent (nil: none).
func (r *reuser) begin(ctx context.Context, w repo.RepositoryWriter, parent *snapshot.Manifest, progress func(int64)) {
	r.w, r.progress = w, progress
	if parent == nil {
		return
	}
	list, err := readReuseList(ctx, w, parent)
	if err != nil {
		// Then every large file is written whole: slower, as correct.
		ctrl.FromContext(ctx).Info("the parent snapshot's list of chunk fingerprints is unusable; large files are hashed whole",
			"snapshot", parent.ID, "reason", err.Error())
		return
	}
	r.prev = map[string]*reuseRecord{}
	for i := range list.Files {
		rec := &list.Files[i]
		if rec.Map != nil {
			r.prev[rec.Path] = rec
		}
	}
}

func readReuseList(ctx context.Context, rep repo.Repository, man *snapshot.Manifest) (*reuseList, error) {
	root, err := snapshotfs.SnapshotRoot(rep, man)
	if err != nil {
		return nil, err
	}
	list := &reuseList{}
	err = readHoldfastFile(ctx, root, kopiarestore.ReuseName, func(rd io.Reader) error {
		if err := json.NewDecoder(rd).Decode(list); err != nil {
			return err
		}
		if list.Version != reuseListVersion {
			return fmt.Errorf("version %d, not %d", list.Version, reuseListVersion)
		}
		return nil
	})
	return list, err
}

// entry writes the large file f and returns its entry, or nil for kopia to write it.
func (r *reuser) entry(ctx context.Context, f *volumeFile) (*snapshot.DirEntry, error) {
	if f.Size() < reuseMinSize || r.w == nil {
		return nil, nil
	}
	rel, err := filepath.Rel(r.dir, f.LocalFilesystemPath())
	if err != nil {
		return nil, err
	}
	rel = filepath.ToSlash(rel)
	rd, err := f.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	file := rd.(*volumeReader).File
	st, err := file.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < reuseMinSize {
		return nil, nil
	}
	if afterReuseStat != nil {
		afterReuseStat(f.LocalFilesystemPath())
	}
	var prev *previousFile
	if rec := r.prev[rel]; rec != nil {
		prev = &previousFile{Object: rec.Map.Object, Size: rec.Size, Map: rec.Map}
	}
	opt := r.opt
	opt.Name = f.Name()
	opt.Compressor = r.pol.CompressionPolicy.CompressorForFile(f)
	opt.Progress = r.progress
	id, m, stats, err := writeReusing(ctx, r.w, file, size, prev, opt)
	if errors.Is(err, errFileShrank) {
		// Truncated while read: kopia's path reads what is there.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", f.LocalFilesystemPath(), err)
	}
	r.mu.Lock()
	r.next[rel] = &reuseRecord{Path: rel, Size: size, Map: m}
	r.mu.Unlock()
	r.files.Add(1)
	r.bytes.Add(size)
	r.reused.Add(stats.ReusedBytes)
	return &snapshot.DirEntry{
		Name:        f.Name(),
		Type:        snapshot.EntryTypeFile,
		Permissions: snapshot.Permissions(f.Mode() & fs.ModBits),
		FileSize:    size,
		ModTime:     fs.UTCTimestampFromTime(f.ModTime()),
		UserID:      f.Owner().UserID,
		GroupID:     f.Owner().GroupID,
		ObjectID:    id,
	}, nil
}

// finish completes man after the upload: the files written here enter its counts, and
// the maps of its large files its root, for the next backup.
func (r *reuser) finish(ctx context.Context, w repo.RepositoryWriter, man *snapshot.Manifest) error {
	man.Stats.TotalFileCount += int32(r.files.Load())
	man.Stats.TotalFileSize += r.bytes.Load()
	records := r.next
	if len(r.prev) > 0 {
		root, err := snapshotfs.SnapshotRoot(w, man)
		if err != nil {
			return err
		}
		for path, rec := range r.prev {
			if records[path] != nil {
				continue
			}
			if same, err := storesObject(ctx, root, path, rec); err != nil {
				return err
			} else if same {
				records[path] = rec
			}
		}
	}
	if len(records) == 0 {
		return nil
	}
	list := reuseList{Version: reuseListVersion}
	for _, rec := range records {
		list.Files = append(list.Files, *rec)
	}
	sort.Slice(list.Files, func(i, j int) bool { return list.Files[i].Path < list.Files[j].Path })
	content, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return addRootFile(ctx, w, man, kopiarestore.ReuseName, content, r.opt.MetadataCompressor)
}

// storesObject tells whether the snapshot below root holds, at path, a file of rec's
// object and size: a file kopia took unchanged from the parent.
func storesObject(ctx context.Context, root fs.Entry, path string, rec *reuseRecord) (bool, error) {
	e := root
	for _, name := range strings.Split(path, "/") {
		d, ok := e.(fs.Directory)
		if !ok {
			return false, nil
		}
		c, err := d.Child(ctx, kopiarestore.EncodeName(name))
		if errors.Is(err, fs.ErrEntryNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("looking for %s in the new snapshot: %w", path, err)
		}
		e = c
	}
	h, ok := e.(object.HasObjectID)
	_, isFile := e.(fs.File)
	return ok && isFile && h.ObjectID() == rec.Map.Object && e.Size() == rec.Size, nil
}

// addRootFile stores content as the file name at the root of man's snapshot: it
// writes the file, then the root directory again with the file's entry, and points man
// at the new root.
func addRootFile(ctx context.Context, w repo.RepositoryWriter, man *snapshot.Manifest, name string, content []byte, metadataComp compression.Name) error {
	ow := w.NewObjectWriter(ctx, object.WriterOptions{Description: "FILE:" + name, MetadataCompressor: metadataComp})
	defer ow.Close() //nolint:errcheck
	if _, err := ow.Write(content); err != nil {
		return err
	}
	fileID, err := ow.Result()
	if err != nil {
		return err
	}
	rd, err := w.OpenObject(ctx, man.RootObjectID())
	if err != nil {
		return fmt.Errorf("reading the snapshot's root: %w", err)
	}
	var dir snapshot.DirManifest
	err = json.NewDecoder(rd).Decode(&dir)
	_ = rd.Close()
	if err != nil {
		return fmt.Errorf("reading the snapshot's root: %w", err)
	}
	for _, e := range dir.Entries {
		if e.Name == name {
			return fmt.Errorf("the snapshot's root already holds %s", name)
		}
	}
	dir.Entries = append(dir.Entries, &snapshot.DirEntry{
		Name:        name,
		Type:        snapshot.EntryTypeFile,
		Permissions: 0o444,
		FileSize:    int64(len(content)),
		// No time of its own: the same list gives the same entry, backup after backup.
		ModTime:  0,
		ObjectID: fileID,
	})
	// kopia's order: directories first, then the rest, each by name.
	sort.SliceStable(dir.Entries, func(i, j int) bool {
		a, b := dir.Entries[i], dir.Entries[j]
		if ad, bd := a.Type == snapshot.EntryTypeDirectory, b.Type == snapshot.EntryTypeDirectory; ad != bd {
			return ad
		}
		return a.Name < b.Name
	})
	if dir.Summary != nil {
		dir.Summary.TotalFileCount++
		dir.Summary.TotalFileSize += int64(len(content))
	}
	rootID, err := snapshotfs.WriteDirManifest(ctx, w, ".", &dir, metadataComp)
	if err != nil {
		return err
	}
	man.RootEntry.ObjectID = rootID
	man.RootEntry.DirSummary = dir.Summary
	return nil
}
