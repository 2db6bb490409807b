// Package keyescrow keeps a copy of each repository's key in the store beside the
// repository, encrypted with age to the recovery recipients of its storage location,
// so that the store and one offline identity are enough to read every backup when the
// cluster and its Secrets are gone. The manager writes escrows and, given an identity,
// recovers keys from them; `holdfast recover` reads them without a cluster.
package keyescrow

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Format names the layout of an escrow's plaintext; a reader refuses others.
const Format = "holdfast.dev/key-escrow/v1"

// ObjectSuffix ends the name of an escrow object: <uploader>/<namespace>.key.age is
// the escrow of the repository at <uploader>/<namespace>/. Namespace names have no
// dots, so an escrow never collides with a repository directory, and kopia and restic
// never look outside their own directory.
const ObjectSuffix = ".key.age"

// The Secret in the operator namespace that a person creates, only to recover keys,
// with an age identity file (one or more AGE-SECRET-KEY-1... lines) under IdentityKey.
const (
	IdentitySecretName = "holdfast-recovery-identity"
	IdentityKey        = "identity"
)

// Escrow is what an escrow object holds once decrypted: the key and enough about the
// repository to find it, and to know what the key is, without the cluster.
type Escrow struct {
	// Format is the constant Format.
	Format string `json:"format"`
	// Password is the repository's key: the kopia or restic repository password.
	Password string `json:"password"`
	// Namespace owns the repository; NamespaceUID is the namespace's UID when the
	// repository knew it (status.namespaceUID).
	Namespace    string `json:"namespace"`
	NamespaceUID string `json:"namespaceUID,omitempty"`
	// Repository is the name of the BackupRepository.
	Repository string `json:"repository"`
	// Uploader is kopia or restic.
	Uploader v1.Uploader `json:"uploader"`
	// StorageLocation is the BackupStorageLocation's name; RepositoryURL is where the
	// repository was when the key was escrowed (s3://bucket/prefix/kopia/<namespace>/).
	StorageLocation string `json:"storageLocation"`
	RepositoryURL   string `json:"repositoryURL"`
	// KeySecretName is the Secret in the operator namespace that held the key.
	KeySecretName string `json:"keySecretName"`
	// KeyCreated is when the key was made (its Secret's creation); Escrowed when this
	// escrow was written.
	KeyCreated time.Time `json:"keyCreated"`
	Escrowed   time.Time `json:"escrowed"`
	// Recipients are the age public keys the escrow is encrypted to, sorted.
	Recipients []string `json:"recipients"`
	// HoldfastVersion wrote it.
	HoldfastVersion string `json:"holdfastVersion,omitempty"`
}

// ObjectPath is the escrow object of the repository of uploader for namespace,
// relative to the store's root.
func ObjectPath(uploader v1.Uploader, namespace string) string {
	return repository.Location(uploader, namespace) + ObjectSuffix
}

// ParseRecipients parses a storage location's recoveryRecipients (age X25519 public
// keys). An error names the entry that is wrong.
func ParseRecipients(keys []string) ([]age.Recipient, error) {
	out := make([]age.Recipient, 0, len(keys))
	for i, k := range keys {
		r, err := age.ParseX25519Recipient(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("spec.recoveryRecipients[%d] is not an age X25519 public key (age1...): %v", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// normalize returns keys sorted without duplicates.
func normalize(keys []string) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, strings.TrimSpace(k))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// RecipientsDigest identifies a set of recipients, whatever their order: an escrow
// written to another set must be written again.
func RecipientsDigest(keys []string) string {
	sum := sha256.Sum256([]byte(strings.Join(normalize(keys), "\n")))
	return hex.EncodeToString(sum[:16])
}

// Seal encrypts e to the recipients (armored age, so that the age CLI and a person's
// eyes can tell what it is). It fills Format and Recipients.
func Seal(e Escrow, keys []string) ([]byte, error) {
	recipients, err := ParseRecipients(keys)
	if err != nil {
		return nil, err
	}
	if len(recipients) == 0 {
		return nil, errors.New("a key escrow needs at least one recipient")
	}
	if e.Password == "" || e.Namespace == "" || e.Uploader == "" {
		return nil, errors.New("a key escrow needs the key, the namespace and the uploader")
	}
	e.Format, e.Recipients = Format, normalize(keys)
	plain, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypting the key escrow: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrWrongIdentity: none of the identities is one the escrow was encrypted to.
var ErrWrongIdentity = errors.New("none of the identities is a recipient of the key escrow")

// Open decrypts an escrow object. An identity that is not a recipient gives an error
// matching ErrWrongIdentity; a damaged or foreign object another error.
func Open(data []byte, identities []age.Identity) (Escrow, error) {
	var src io.Reader = bytes.NewReader(data)
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
		src = armor.NewReader(src)
	}
	r, err := age.Decrypt(src, identities...)
	var noMatch *age.NoIdentityMatchError
	if errors.As(err, &noMatch) {
		return Escrow{}, fmt.Errorf("%w: %v", ErrWrongIdentity, err)
	}
	if err != nil {
		return Escrow{}, fmt.Errorf("the key escrow is not an age file Holdfast can read: %w", err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return Escrow{}, fmt.Errorf("the key escrow is damaged: %w", err)
	}
	var e Escrow
	if err := json.Unmarshal(plain, &e); err != nil {
		return Escrow{}, fmt.Errorf("the key escrow does not hold a Holdfast escrow: %w", err)
	}
	if e.Format != Format {
		return Escrow{}, fmt.Errorf("the key escrow has format %q, not %q", e.Format, Format)
	}
	if e.Password == "" {
		return Escrow{}, errors.New("the key escrow holds no key")
	}
	return e, nil
}

// ParseIdentities parses an age identity file: AGE-SECRET-KEY-1... lines, comments
// (#) and blank lines. Its errors never quote the file.
func ParseIdentities(data []byte) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an age identity file (AGE-SECRET-KEY-1... lines): %v", err)
	}
	return ids, nil
}

// Write seals e to the recipients and stores it beside its repository.
func Write(ctx context.Context, st repository.Store, e Escrow, keys []string) error {
	data, err := Seal(e, keys)
	if err != nil {
		return err
	}
	return st.WriteObject(ctx, ObjectPath(e.Uploader, e.Namespace), data)
}

// Exists reports whether the repository of uploader for namespace has an escrow.
func Exists(ctx context.Context, st repository.Store, uploader v1.Uploader, namespace string) (bool, error) {
	return st.ObjectExists(ctx, ObjectPath(uploader, namespace))
}

// Read returns the (encrypted) escrow object of the repository of uploader for
// namespace; a missing one is an error wrapping os.ErrNotExist.
func Read(ctx context.Context, st repository.Store, uploader v1.Uploader, namespace string) ([]byte, error) {
	return st.ReadObject(ctx, ObjectPath(uploader, namespace))
}

// IsNotExist reports whether err says an escrow does not exist.
func IsNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
