package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func s3Store(s *minio.Server, bucket string) Store {
	st := &S3Store{Bucket: bucket, Prefix: "cluster-a", Endpoint: s.Endpoint, AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey, Insecure: s.CA == nil}
	if s.CA != nil {
		st.CABundle = s.CA.CertPEM
	}
	return Store{S3: st}
}

func testConfig(t *testing.T, st Store, uploader v1.Uploader, ns string) Config {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return Config{Store: st, Uploader: uploader, Namespace: ns, Password: key, WorkDir: t.TempDir(),
		ResticPath: filepath.Join(testenv.ToolsBin(), "restic")}
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func checkTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("restored %s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, []byte(want)) {
			t.Errorf("restored %s = %q, want %q", name, got, want)
		}
	}
}

// randomText is n bytes that neither compress nor deduplicate.
func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestRoundTrip initialises a kopia and a restic repository on MinIO, takes two
// snapshots of a temporary directory (the second incremental to the first), restores
// one, deletes one and maintains the repository.
func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := testConfig(t, s3Store(s, "backups"), uploader, "shop")
			if _, err := Open(ctx, cfg); !errors.Is(err, ErrNotInitialized) {
				t.Fatalf("Open before Initialize: %v, want ErrNotInitialized", err)
			}
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatalf("Initialize: %v", err)
			}
			if err := Initialize(ctx, cfg); !errors.Is(err, ErrExistingData) {
				t.Fatalf("second Initialize: %v, want ErrExistingData", err)
			}
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close(ctx)
			if want := "s3://backups/cluster-a/" + string(uploader) + "/shop/"; r.URL() != want {
				t.Errorf("URL = %s, want %s", r.URL(), want)
			}

			src := t.TempDir()
			// big.bin is above the small-file size: a kopia restore reads it past the cache.
			files := map[string]string{"a.txt": "alpha", "dir/b.txt": "bravo", "dir/deep/c.txt": "charlie", "dir/big.bin": randomText(t, 300<<10)}
			writeTree(t, src, files)
			var progressCalls int
			first, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/data", Tags: map[string]string{"policy": "nightly"},
				Progress: func(Progress) { progressCalls++ }})
			if err != nil {
				t.Fatalf("first Backup: %v", err)
			}
			if first.SnapshotID == "" || first.ParentSnapshotID != "" || first.TotalFiles != 4 || progressCalls == 0 {
				t.Errorf("first backup = %+v (progress calls %d)", first, progressCalls)
			}
			files["dir/b.txt"] = "bravo, changed"
			writeTree(t, src, files)
			second, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/data", Tags: map[string]string{"policy": "nightly"}})
			if err != nil {
				t.Fatalf("second Backup: %v", err)
			}
			if second.ParentSnapshotID != first.SnapshotID {
				t.Errorf("second backup's parent = %q, want the first %q", second.ParentSnapshotID, first.SnapshotID)
			}

			snaps, err := r.Snapshots(ctx, "/pvc/data")
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps) != 2 || snaps[0].ID != first.SnapshotID || snaps[1].ID != second.SnapshotID ||
				snaps[1].Tags["policy"] != "nightly" || snaps[1].SourcePath != "/pvc/data" {
				t.Fatalf("snapshots = %+v", snaps)
			}

			target := t.TempDir()
			res, err := r.Restore(ctx, RestoreRequest{SnapshotID: second.SnapshotID, TargetDir: target})
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			checkTree(t, target, files)
			if res.TotalFiles < 4 { // restic counts directories too
				t.Errorf("restored %d files, want at least 4", res.TotalFiles)
			}

			if err := r.Delete(ctx, first.SnapshotID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := r.Delete(ctx, first.SnapshotID); err != nil {
				t.Fatalf("Delete of a deleted snapshot: %v", err)
			}
			if snaps, _ := r.Snapshots(ctx, ""); len(snaps) != 1 || snaps[0].ID != second.SnapshotID {
				t.Fatalf("after Delete: %+v", snaps)
			}
			mode := ModeFor(uploader, time.Time{}, time.Now())
			// A single-writer test repository: reclaim without kopia's safety margins.
			m, err := r.Maintain(ctx, MaintenanceRequest{Mode: mode, UnsafeReclaimNow: true})
			if err != nil {
				t.Fatalf("Maintain(%s): %v", mode, err)
			}
			if m.Message == "" || m.CompletionTime.Before(m.StartTime) {
				t.Errorf("maintenance result %+v", m)
			}
		})
	}
}

// TestKeysAreNotInterchangeable: a repository opened with another repository's key is
// ErrWrongKey, and the failed attempt writes nothing to the store.
func TestKeysAreNotInterchangeable(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := testConfig(t, s3Store(s, "backups"), uploader, "keys")
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			before, err := s.Objects(ctx, "backups", "")
			if err != nil {
				t.Fatal(err)
			}
			other := testConfig(t, cfg.Store, uploader, "keys")
			_, err = Open(ctx, other)
			if !errors.Is(err, ErrWrongKey) {
				t.Fatalf("Open with another key: %v, want ErrWrongKey", err)
			}
			if err := Initialize(ctx, other); !errors.Is(err, ErrExistingData) {
				t.Fatalf("Initialize over the repository: %v, want ErrExistingData", err)
			}
			after, err := s.Objects(ctx, "backups", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(before) != len(after) {
				t.Fatalf("objects changed: before %v, after %v", before, after)
			}
			for i := range before {
				if before[i] != after[i] {
					t.Fatalf("objects changed: before %v, after %v", before, after)
				}
			}
		})
	}
}

// TestProbe: a good store probes clean and leaves nothing behind; each kind of wrong
// store gives its own error kind.
func TestProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO")
	}
	s := minio.Start(t, minio.Options{TLS: true, Buckets: []string{"backups"}})
	otherCA, err := minio.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	stopped := minio.Start(t, minio.Options{})
	stopped.Stop()
	ctx := ctxFor(t)
	good := s3Store(s, "backups")
	if err := Probe(ctx, good); err != nil {
		t.Fatalf("probe of a good store: %v", err)
	}
	if objs, _ := s.Objects(ctx, "backups", ""); len(objs) != 0 {
		t.Errorf("probe left %v behind", objs)
	}
	fsDir := t.TempDir()
	if err := Probe(ctx, Store{Filesystem: &FilesystemStore{Path: fsDir}}); err != nil {
		t.Fatalf("probe of a directory: %v", err)
	}
	mutate := func(f func(*S3Store)) Store {
		c := *good.S3
		f(&c)
		return Store{S3: &c}
	}
	for name, tc := range map[string]struct {
		store Store
		kind  *Error
	}{
		"wrong endpoint":    {mutate(func(s *S3Store) { s.Endpoint = stopped.Endpoint }), ErrUnreachable},
		"missing bucket":    {mutate(func(s *S3Store) { s.Bucket = "nope" }), ErrBucketMissing},
		"wrong secret":      {mutate(func(s *S3Store) { s.SecretAccessKey = "not-the-secret" }), ErrCredentials},
		"wrong CA":          {mutate(func(s *S3Store) { s.CABundle = otherCA.CertPEM }), ErrUntrustedCertificate},
		"missing directory": {Store{Filesystem: &FilesystemStore{Path: filepath.Join(fsDir, "absent")}}, ErrUnreachable},
	} {
		t.Run(name, func(t *testing.T) {
			err := Probe(ctx, tc.store)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Probe: %v, want kind %s", err, tc.kind.Reason())
			}
			t.Logf("%s: %v", ErrorReason(err), err)
		})
	}
}

// TestFilesystemKopia: kopia on a filesystem store keeps its layout under
// <path>/kopia/<namespace> and leaves no config file behind after Close. Before the
// repository exists, Open says it is not initialised (not that the store is
// unreachable), so that the repository controller creates it.
func TestFilesystemKopia(t *testing.T) {
	ctx := ctxFor(t)
	root := t.TempDir()
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: root}}, v1.UploaderKopia, "demo")
	if _, err := Open(ctx, cfg); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Open before Initialize: %v, want ErrNotInitialized", err)
	}
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "kopia", "demo", "kopia.repository.f")); err != nil {
		t.Fatalf("repository layout: %v", err)
	}
	r, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x": "y"})
	if _, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pod/web/cache"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(cfg.WorkDir, "*", "*", "*.config"))
	if len(matches) != 0 {
		t.Fatalf("config files left behind: %v", matches)
	}
}

// TestTLSAndCancellation: both formats work against a TLS store whose CA is given in
// the store (kopia through its RootCA, restic through --cacert), and Backup and Restore
// stop with the context's error when it is cancelled.
func TestTLSAndCancellation(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{TLS: true, Buckets: []string{"backups"}})
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := testConfig(t, s3Store(s, "backups"), uploader, "tls")
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatalf("Initialize over TLS: %v", err)
			}
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatalf("Open over TLS: %v", err)
			}
			defer r.Close(ctx)
			src := t.TempDir()
			files := map[string]string{"f": "data", "big": randomText(t, 100<<10)}
			writeTree(t, src, files)
			done, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/x"})
			if err != nil {
				t.Fatalf("Backup over TLS: %v", err)
			}
			target := t.TempDir()
			if _, err := r.Restore(ctx, RestoreRequest{SnapshotID: done.SnapshotID, TargetDir: target}); err != nil {
				t.Fatalf("Restore over TLS: %v", err)
			}
			checkTree(t, target, files)
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := r.Backup(cancelled, BackupRequest{Dir: src, SourcePath: "/pvc/x"}); !errors.Is(err, context.Canceled) {
				t.Errorf("Backup with a cancelled context: %v, want context.Canceled", err)
			}
			if _, err := r.Restore(cancelled, RestoreRequest{SnapshotID: done.SnapshotID, TargetDir: t.TempDir()}); !errors.Is(err, context.Canceled) {
				t.Errorf("Restore with a cancelled context: %v, want context.Canceled", err)
			}
			if snaps, err := r.Snapshots(ctx, "/pvc/x"); err != nil || len(snaps) != 1 {
				t.Errorf("after a cancelled backup: %v %v, want only the first snapshot", snaps, err)
			}
		})
	}
}

// TestMaintenanceReclaimsSpace: after a snapshot with data of its own is deleted,
// maintenance gives the space back in the store. restic prune does it at once. kopia
// runs with UnsafeReclaimNow (SafetyNone) because this is a single-writer test
// repository; even so it needs a second full pass that starts in a later second than
// the one that found the garbage, so passes repeat until the space is back (under
// SafetyFull, space returns only after two full passes about a day apart).
func TestMaintenanceReclaimsSpace(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO and restic")
	}
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := testConfig(t, s3Store(s, "backups"), uploader, "reclaim")
			prefix := "cluster-a/" + string(uploader) + "/reclaim/"
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			const size = 4 << 20
			src := t.TempDir()
			writeTree(t, src, map[string]string{"big": randomText(t, size)})
			first, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/big"})
			if err != nil {
				t.Fatal(err)
			}
			writeTree(t, src, map[string]string{"big": randomText(t, size)})
			if _, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/big"}); err != nil {
				t.Fatal(err)
			}
			before, err := s.Size(ctx, "backups", prefix)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Delete(ctx, first.SnapshotID); err != nil {
				t.Fatal(err)
			}
			var after int64
			var last MaintenanceResult
			passes := 0
			for deadline := time.Now().Add(2 * time.Minute); ; {
				passes++
				if last, err = r.Maintain(ctx, MaintenanceRequest{Mode: ModeFor(uploader, time.Time{}, time.Now()), UnsafeReclaimNow: true}); err != nil {
					t.Fatal(err)
				}
				if after, err = s.Size(ctx, "backups", prefix); err != nil {
					t.Fatal(err)
				}
				if before-after >= size/2 || time.Now().After(deadline) {
					break
				}
			}
			t.Logf("%d bytes before, %d after deleting a snapshot and %d maintenance passes (%s)", before, after, passes, last.Message)
			if before-after < size/2 {
				t.Fatalf("maintenance reclaimed %d bytes, want about %d", before-after, size)
			}
			if uploader == v1.UploaderRestic && passes != 1 {
				t.Errorf("restic needed %d prunes, want 1", passes)
			}
		})
	}
}

// TestChosenParent: the caller decides what a backup is incremental to, so that a
// namespace created again under an old name does not continue (and learn the IDs of)
// the chain of the namespace before it (review M14). An explicit parent is used only
// when it is a snapshot of the same source; NoParent reads everything.
func TestChosenParent(t *testing.T) {
	if testing.Short() {
		t.Skip("needs restic")
	}
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, uploader, "shop")
			if err := Initialize(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			src := t.TempDir()
			writeTree(t, src, map[string]string{"a": "alpha"})
			backup := func(source, parent string) BackupResult {
				t.Helper()
				res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: source, Parent: parent})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			first := backup("/pvc/data", "")
			second := backup("/pvc/data", "")
			other := backup("/pvc/other", "")
			for _, tc := range []struct {
				name, parent, want string
			}{
				{"newest by default", "", second.SnapshotID},
				{"none", NoParent, ""},
				{"an older one", first.SnapshotID, first.SnapshotID},
				{"another source's", other.SnapshotID, ""},
				{"one that does not exist", "0123456789abcdef0123456789abcdef", ""},
			} {
				if got := backup("/pvc/data", tc.parent).ParentSnapshotID; got != tc.want {
					t.Errorf("%s: parent %q, want %q", tc.name, got, tc.want)
				}
			}
		})
	}
}
