package recovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	miniogo "github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/keyescrow"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// checksums maps each regular file below dir (by relative path) to its SHA-256.
func checksums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files restored, want %d: %v", what, len(got), len(want), got)
	}
	for name, sum := range want {
		if got[name] != sum {
			t.Errorf("%s: %s has checksum %q, want %q", what, name, got[name], sum)
		}
	}
}

// runScript runs the commands `holdfast recover password` printed, plus extra lines,
// with the kopia and restic CLIs of the toolchain first on PATH.
func runScript(t *testing.T, printed string, extra ...string) string {
	t.Helper()
	home := t.TempDir()
	script := "set -eu\n" + printed + "\n" + strings.Join(extra, "\n") + "\n"
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = []string{"PATH=" + testenv.ToolsBin() + ":/usr/local/bin:/usr/bin:/bin", "HOME=" + home,
		"KOPIA_CHECK_FOR_UPDATES=false", "RESTIC_CACHE_DIR=" + filepath.Join(home, "restic-cache")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the printed commands failed: %v\nscript:\n%s\noutput:\n%s", err, script, out)
	}
	return string(out)
}

// template returns the "# then: ..." line of the printed commands, without the comment.
func template(t *testing.T, printed string) string {
	t.Helper()
	for _, line := range strings.Split(printed, "\n") {
		if rest, ok := strings.CutPrefix(line, "# then: "); ok {
			return rest
		}
	}
	t.Fatalf("no restore command in:\n%s", printed)
	return ""
}

// TestRecoverWithThePlainCLIs: Holdfast writes a kopia and a restic repository to
// MinIO with their keys escrowed; with only the location's manifest, the credentials
// Secret's manifest and the identity file, `holdfast recover` lists them and their
// restore points and gives each password, and the kopia and restic command-line tools
// restore byte-identical data with the commands it prints. Maintenance (kopia full,
// restic prune) and restic check neither touch nor mind the escrow objects.
func TestRecoverWithThePlainCLIs(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MinIO, kopia and restic from the toolchain")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s3 := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	bsl := &v1.BackupStorageLocation{TypeMeta: metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: "offsite"},
		Spec: v1.BackupStorageLocationSpec{S3: &v1.S3Location{Bucket: "backups", Prefix: "cluster-1/holdfast", Endpoint: s3.Endpoint,
			ForcePathStyle: true, Insecure: true, CredentialsSecretRef: v1.SecretReference{Name: "offsite-credentials"}},
			RecoveryRecipients: []string{id.Recipient().String()}}}
	dir := t.TempDir()
	files := map[string][]byte{
		"location.yaml": mustYAML(t, bsl),
		"credentials.yaml": []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: offsite-credentials\n  namespace: holdfast-system\n" +
			"stringData:\n  AWS_ACCESS_KEY_ID: " + s3.AccessKey + "\n  AWS_SECRET_ACCESS_KEY: " + s3.SecretKey + "\n"),
		"identity.txt":       []byte("# created: in a test\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"),
		"wrong-identity.txt": []byte(other.String() + "\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store, err := repository.StoreFromLocation(bsl, nil)
	if err == nil {
		t.Fatal("a store without credentials")
	}
	creds, err := readCredentials(filepath.Join(dir, "credentials.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if store, err = repository.StoreFromLocation(bsl, creds); err != nil {
		t.Fatal(err)
	}

	// The data: a few files, one large enough to span chunks, in a subdirectory too.
	src := t.TempDir()
	big := bytes.Repeat([]byte("holdfast recovers without a cluster. "), 200_000)
	for name, data := range map[string][]byte{"orders.db": big, "notes/readme.txt": []byte("hello\n"), "empty": nil} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := checksums(t, src)
	resticBin := filepath.Join(testenv.ToolsBin(), "restic")
	snapshots := map[v1.Uploader]string{}
	escrowETags := map[v1.Uploader]string{}
	for _, u := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		key, _ := repository.GenerateKey()
		cfg := repository.Config{Store: store, Uploader: u, Namespace: "shop", Password: key, WorkDir: t.TempDir(), ResticPath: resticBin}
		// As the manager does it: the escrow first, then the repository.
		if err := keyescrow.Write(ctx, store, keyescrow.Escrow{Password: key, Namespace: "shop", Repository: "offsite-" + string(u), Uploader: u,
			StorageLocation: "offsite", RepositoryURL: cfg.URL(), KeyCreated: time.Now()}, bsl.Spec.RecoveryRecipients); err != nil {
			t.Fatal(err)
		}
		escrowETags[u] = etag(t, s3, "cluster-1/holdfast/"+keyescrow.ObjectPath(u, "shop"))
		if err := repository.Initialize(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		rep, err := repository.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		res, err := rep.Backup(ctx, repository.BackupRequest{Dir: src, SourcePath: "/pvc/orders"})
		if err != nil {
			t.Fatal(err)
		}
		snapshots[u] = res.SnapshotID
		mode := repository.MaintenanceFull
		if u == v1.UploaderRestic {
			mode = repository.MaintenancePrune
		}
		if _, err := rep.Maintain(ctx, repository.MaintenanceRequest{Mode: mode}); err != nil {
			t.Fatalf("%s maintenance beside the escrow: %v", u, err)
		}
		_ = rep.Close(ctx)
		if got := etag(t, s3, "cluster-1/holdfast/"+keyescrow.ObjectPath(u, "shop")); got != escrowETags[u] {
			t.Errorf("%s maintenance changed the escrow object", u)
		}
	}

	args := func(cmd string, more ...string) []string {
		return append([]string{cmd, "--location", filepath.Join(dir, "location.yaml"), "--credentials", filepath.Join(dir, "credentials.yaml"),
			"--identity", filepath.Join(dir, "identity.txt"), "--restic", resticBin}, more...)
	}
	var stdout, stderr bytes.Buffer
	if err := Main(args("list"), &stdout, &stderr); err != nil {
		t.Fatalf("recover list: %v\n%s", err, stderr.String())
	}
	t.Logf("holdfast recover list:\n%s", stdout.String())
	for _, s := range []string{"kopia repository of namespace shop: s3://backups/cluster-1/holdfast/kopia/shop/", "restic repository of namespace shop",
		snapshots[v1.UploaderKopia], snapshots[v1.UploaderRestic], "/pvc/orders", "key: recovered from its escrow"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("recover list does not show %q", s)
		}
	}

	for _, u := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		out := filepath.Join(dir, "out")
		stdout.Reset()
		if err := Main(args("password", "--namespace", "shop", "--uploader", string(u), "--out-dir", out), &stdout, &stderr); err != nil {
			t.Fatalf("recover password: %v\n%s", err, stderr.String())
		}
		printed := stdout.String()
		t.Logf("holdfast recover password --uploader %s:\n%s", u, printed)
		passwordFile := filepath.Join(out, string(u)+"-shop.password")
		if st, err := os.Stat(passwordFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("password file %v %v", st, err)
		}
		if strings.Contains(printed, s3.SecretKey) {
			t.Error("the printed commands show the store's secret key")
		}
		var stdoutOnly bytes.Buffer
		if err := Main(args("password", "--namespace", "shop", "--uploader", string(u), "--stdout"), &stdoutOnly, &stderr); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(passwordFile); strings.TrimSpace(stdoutOnly.String()) != string(data) {
			t.Error("--stdout and the password file disagree")
		}
		target := t.TempDir()
		restore := template(t, printed)
		switch u {
		case v1.UploaderKopia:
			restore = strings.NewReplacer("<snapshot-id>", snapshots[u], "<target-directory>", target).Replace(restore)
			runScript(t, printed, restore)
		case v1.UploaderRestic:
			// The snapshot holds the directory this test read (the agent's is /volume).
			restore = strings.NewReplacer("<snapshot-id>:/volume", snapshots[u]+":"+src, "<target-directory>", target).Replace(restore)
			var check string
			for _, line := range strings.Split(printed, "\n") {
				if strings.HasPrefix(line, "restic ") && strings.HasSuffix(line, " snapshots") {
					check = strings.TrimSuffix(line, " snapshots") + " check --read-data"
				}
			}
			t.Logf("restic check: %s", runScript(t, printed, restore, check))
		}
		sameTree(t, string(u)+" CLI restore", want, checksums(t, target))
	}

	// A wrong identity gets nothing.
	err = Main([]string{"password", "--location", filepath.Join(dir, "location.yaml"), "--credentials", filepath.Join(dir, "credentials.yaml"),
		"--identity", filepath.Join(dir, "wrong-identity.txt"), "--namespace", "shop", "--uploader", "kopia", "--stdout"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "not a recipient") {
		t.Errorf("recover password with a wrong identity: %v", err)
	}
}

func mustYAML(t *testing.T, obj any) []byte {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("# the storage location as it is in Git\n---\n"), data...)
}

func etag(t *testing.T, s *minio.Server, key string) string {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.StatObject(context.Background(), "backups", key, miniogo.StatObjectOptions{})
	if err != nil {
		t.Fatalf("the escrow %s: %v", key, err)
	}
	return info.ETag
}
