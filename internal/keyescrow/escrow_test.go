package keyescrow

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

func identity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSealOpen: every recipient opens the escrow and gets back what was sealed; any
// other identity is ErrWrongIdentity, and the plaintext is not in the object.
func TestSealOpen(t *testing.T) {
	alice, bob, mallory := identity(t), identity(t), identity(t)
	in := Escrow{Password: "s3cr3t-key", Namespace: "shop", NamespaceUID: "uid-1", Repository: "main-kopia",
		Uploader: v1.UploaderKopia, StorageLocation: "main", RepositoryURL: "s3://backups/p/kopia/shop/",
		KeySecretName: "repository-key-shop-main-kopia-0011", KeyCreated: time.Unix(1700000000, 0).UTC(), Escrowed: time.Unix(1700000100, 0).UTC()}
	keys := []string{bob.Recipient().String(), alice.Recipient().String()}
	data, err := Seal(in, keys)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("s3cr3t-key")) || bytes.Contains(data, []byte("shop")) {
		t.Fatal("the escrow object shows its plaintext")
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
		t.Errorf("escrow is not armored: %q", data[:40])
	}
	for _, id := range []*age.X25519Identity{alice, bob} {
		got, err := Open(data, []age.Identity{mallory, id})
		if err != nil {
			t.Fatalf("opening with a recipient's identity: %v", err)
		}
		if got.Password != in.Password || got.Namespace != "shop" || got.NamespaceUID != "uid-1" || got.Uploader != v1.UploaderKopia ||
			!got.KeyCreated.Equal(in.KeyCreated) || got.Format != Format {
			t.Errorf("opened %+v", got)
		}
		if want := normalize(keys); strings.Join(got.Recipients, ",") != strings.Join(want, ",") {
			t.Errorf("recipients = %v, want %v", got.Recipients, want)
		}
	}
	if _, err := Open(data, []age.Identity{mallory}); !errors.Is(err, ErrWrongIdentity) {
		t.Errorf("opening with another identity: %v, want ErrWrongIdentity", err)
	}
	if _, err := Open([]byte("not age"), []age.Identity{alice}); err == nil || errors.Is(err, ErrWrongIdentity) {
		t.Errorf("opening garbage: %v", err)
	}
}

func TestRecipients(t *testing.T) {
	a, b := identity(t).Recipient().String(), identity(t).Recipient().String()
	if RecipientsDigest([]string{a, b}) != RecipientsDigest([]string{b, a, a}) {
		t.Error("the digest depends on order or duplicates")
	}
	if RecipientsDigest([]string{a}) == RecipientsDigest([]string{a, b}) {
		t.Error("adding a recipient does not change the digest")
	}
	// A typo keeps the format (the CRD accepts it) but breaks the checksum.
	typo := a[:len(a)-1] + map[bool]string{true: "q", false: "p"}[a[len(a)-1] != 'q']
	_, err := ParseRecipients([]string{a, typo})
	if err == nil || !strings.Contains(err.Error(), "spec.recoveryRecipients[1]") {
		t.Errorf("ParseRecipients with a typo in the second: %v", err)
	}
	if _, err := Seal(Escrow{Password: "k", Namespace: "n", Uploader: v1.UploaderRestic}, nil); err == nil {
		t.Error("sealed to nobody")
	}
}

func TestParseIdentitiesNeverQuotesTheFile(t *testing.T) {
	_, err := ParseIdentities([]byte("AGE-SECRET-KEY-1NOTAKEY-butsecret\n"))
	if err == nil || strings.Contains(err.Error(), "butsecret") {
		t.Errorf("error %v", err)
	}
	id := identity(t)
	ids, err := ParseIdentities([]byte("# created: today\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"))
	if err != nil || len(ids) != 1 {
		t.Errorf("a file from age-keygen: %v %v", ids, err)
	}
}

// TestWriteReadBesideTheRepository: on a filesystem store the escrow is
// <uploader>/<namespace>.key.age, outside the repository's directory, and replacing it
// leaves no temporary file behind.
func TestWriteReadBesideTheRepository(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := repository.Store{Filesystem: &repository.FilesystemStore{Path: root}}
	id := identity(t)
	if ok, err := Exists(ctx, st, v1.UploaderRestic, "shop"); ok || err != nil {
		t.Fatalf("Exists before writing = %v, %v", ok, err)
	}
	if _, err := Read(ctx, st, v1.UploaderRestic, "shop"); !IsNotExist(err) {
		t.Fatalf("Read before writing: %v", err)
	}
	for _, key := range []string{"first", "second"} {
		if err := Write(ctx, st, Escrow{Password: key, Namespace: "shop", Uploader: v1.UploaderRestic}, []string{id.Recipient().String()}); err != nil {
			t.Fatal(err)
		}
	}
	data, err := Read(ctx, st, v1.UploaderRestic, "shop")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(data, []age.Identity{id})
	if err != nil || e.Password != "second" {
		t.Fatalf("read back %+v, %v", e, err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "restic"))
	if len(entries) != 1 || entries[0].Name() != "shop.key.age" {
		t.Errorf("restic/ holds %v, want only shop.key.age", entries)
	}
	if ok, err := Exists(ctx, st, v1.UploaderRestic, "shop"); !ok || err != nil {
		t.Errorf("Exists = %v, %v", ok, err)
	}
}
