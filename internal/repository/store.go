package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	miniogo "github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	corev1 "k8s.io/api/core/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Keys of a storage location's credentials Secret.
const (
	SecretAccessKeyID     = "AWS_ACCESS_KEY_ID"
	SecretSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	SecretSessionToken    = "AWS_SESSION_TOKEN"
)

// Store is where repositories live: exactly one of S3 and Filesystem is set.
type Store struct {
	S3         *S3Store
	Filesystem *FilesystemStore
}

// S3Store is a bucket and prefix on an S3-compatible store, with credentials.
type S3Store struct {
	Bucket, Prefix, Endpoint, Region string
	ForcePathStyle, Insecure         bool
	// CABundle is PEM; empty trusts the system roots.
	CABundle                                   []byte
	AccessKeyID, SecretAccessKey, SessionToken string
}

// FilesystemStore is a directory mounted at the same path everywhere.
type FilesystemStore struct {
	Path string
}

// StoreFromLocation builds a Store from a storage location and, for S3, its
// credentials Secret (nil for filesystem locations).
func StoreFromLocation(bsl *v1.BackupStorageLocation, creds *corev1.Secret) (Store, error) {
	switch {
	case bsl.Spec.Filesystem != nil:
		return Store{Filesystem: &FilesystemStore{Path: filepath.Clean(bsl.Spec.Filesystem.Path)}}, nil
	case bsl.Spec.S3 != nil:
		s := bsl.Spec.S3
		if creds == nil {
			return Store{}, fmt.Errorf("storage location %s needs its credentials Secret %s", bsl.Name, s.CredentialsSecretRef.Name)
		}
		id, secret := string(creds.Data[SecretAccessKeyID]), string(creds.Data[SecretSecretAccessKey])
		if id == "" || secret == "" {
			return Store{}, fmt.Errorf("credentials Secret %s must have the keys %s and %s", creds.Name, SecretAccessKeyID, SecretSecretAccessKey)
		}
		endpoint := s.Endpoint
		if endpoint == "" {
			endpoint = "s3." + s.Region + ".amazonaws.com"
		}
		return Store{S3: &S3Store{
			Bucket: s.Bucket, Prefix: strings.Trim(s.Prefix, "/"), Endpoint: endpoint, Region: s.Region,
			ForcePathStyle: s.ForcePathStyle, Insecure: s.Insecure, CABundle: s.CABundle,
			AccessKeyID: id, SecretAccessKey: secret, SessionToken: string(creds.Data[SecretSessionToken]),
		}}, nil
	}
	return Store{}, fmt.Errorf("storage location %s sets neither s3 nor filesystem", bsl.Name)
}

// URL is the store's root, or of rel below it, as a URL (s3://bucket/prefix/rel/ or
// file:///path/rel/).
func (s Store) URL(rel string) string {
	switch {
	case s.S3 != nil:
		return "s3://" + strings.TrimSuffix(path.Join(s.S3.Bucket, s.S3.Prefix, rel), "/") + "/"
	case s.Filesystem != nil:
		return "file://" + strings.TrimSuffix(path.Join(s.Filesystem.Path, rel), "/") + "/"
	}
	return ""
}

func (s *S3Store) key(rel string) string {
	return strings.TrimPrefix(path.Join(s.Prefix, rel), "/")
}

func (s *S3Store) transport() (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	if len(s.CABundle) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(s.CABundle) {
			return nil, newError(ErrUntrustedCertificate, "The caBundle of the storage location holds no PEM certificate: paste the certificate authority's PEM (-----BEGIN CERTIFICATE-----) into spec.s3.caBundle", nil)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return tr, nil
}

func (s *S3Store) client() (*miniogo.Client, error) {
	tr, err := s.transport()
	if err != nil {
		return nil, err
	}
	lookup := miniogo.BucketLookupAuto
	if s.ForcePathStyle {
		lookup = miniogo.BucketLookupPath
	}
	return miniogo.New(s.Endpoint, &miniogo.Options{
		Creds:        credentials.NewStaticV4(s.AccessKeyID, s.SecretAccessKey, s.SessionToken),
		Secure:       !s.Insecure,
		Region:       s.Region,
		BucketLookup: lookup,
		Transport:    tr,
		// The caller retries on its own back-off; a wrong endpoint must fail fast.
		MaxRetries: 2,
	})
}

// preflight checks, before kopia or restic touch an S3 store, that the bucket exists
// and the credentials work: kopia reports a missing bucket as "not initialised" and
// restic would create the bucket, and Holdfast never creates buckets.
func preflight(ctx context.Context, st Store) error {
	if st.S3 == nil {
		if _, err := os.Stat(st.Filesystem.Path); err != nil {
			return classify(err, st)
		}
		return nil
	}
	c, err := st.S3.client()
	if err != nil {
		return classify(err, st)
	}
	ok, err := c.BucketExists(ctx, st.S3.Bucket)
	if err != nil {
		return classify(err, st)
	}
	if !ok {
		return bucketMissing(st)
	}
	return nil
}

// locationEmpty reports whether nothing is stored under rel.
func locationEmpty(ctx context.Context, st Store, rel string) (bool, error) {
	if st.S3 != nil {
		c, err := st.S3.client()
		if err != nil {
			return false, err
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for obj := range c.ListObjects(ctx, st.S3.Bucket, miniogo.ListObjectsOptions{Prefix: st.S3.key(rel) + "/", Recursive: true, MaxKeys: 1}) {
			if obj.Err != nil {
				return false, obj.Err
			}
			return false, nil
		}
		return true, nil
	}
	entries, err := os.ReadDir(filepath.Join(st.Filesystem.Path, rel))
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	return len(entries) == 0, err
}

// Probe writes, reads back and deletes a small object at the store's root (under
// .holdfast-probe/), and returns an *Error saying what is wrong, or nil.
func Probe(ctx context.Context, st Store) error {
	token, err := GenerateKey()
	if err != nil {
		return err
	}
	body := []byte("holdfast probe " + token)
	name := ".holdfast-probe/" + token
	if st.Filesystem != nil {
		return probeFilesystem(st, name, body)
	}
	c, err := st.S3.client()
	if err != nil {
		return classify(err, st)
	}
	key := st.S3.key(name)
	if _, err := c.PutObject(ctx, st.S3.Bucket, key, bytes.NewReader(body), int64(len(body)), miniogo.PutObjectOptions{ContentType: "text/plain"}); err != nil {
		return classify(err, st)
	}
	obj, err := c.GetObject(ctx, st.S3.Bucket, key, miniogo.GetObjectOptions{})
	if err != nil {
		return classify(err, st)
	}
	got, err := io.ReadAll(obj)
	_ = obj.Close()
	if err != nil {
		return classify(err, st)
	}
	if !bytes.Equal(got, body) {
		return newError(ErrUnreachable, fmt.Sprintf("The store at %s returned different data than was written to it: check that the endpoint is an S3-compatible store and not a proxy that rewrites objects", st.S3.Endpoint), nil)
	}
	if err := c.RemoveObject(ctx, st.S3.Bucket, key, miniogo.RemoveObjectOptions{}); err != nil {
		return classify(err, st)
	}
	return nil
}

func probeFilesystem(st Store, name string, body []byte) error {
	p := filepath.Join(st.Filesystem.Path, filepath.FromSlash(name))
	if _, err := os.Stat(st.Filesystem.Path); err != nil {
		return classify(err, st)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return classify(err, st)
	}
	if err := os.WriteFile(p, body, 0o600); err != nil {
		return classify(err, st)
	}
	defer os.Remove(p)
	got, err := os.ReadFile(p)
	if err != nil {
		return classify(err, st)
	}
	if !bytes.Equal(got, body) {
		return newError(ErrUnreachable, fmt.Sprintf("The directory %s returned different data than was written to it", st.Filesystem.Path), nil)
	}
	if err := os.Remove(p); err != nil {
		return classify(err, st)
	}
	return nil
}

// KeySecretKey is the data key of a repository's key Secret.
const KeySecretKey = "repository-password"

// KeySecretName is the name, in the operator namespace, of the Secret that holds the
// key of BackupRepository name in namespace. The BackupRepository's
// status.keySecretName is the authority; this is how the manager names new ones.
//
// A name longer than a Secret's 253 characters is cut and ends in a hash. The cut can
// land on a dot of a name with dots, and ".-" is not allowed in a Secret name, so the
// dots at the cut go. Nothing else is trimmed: a cut on a dash gives "--", which is
// valid, and an existing Secret named that way keeps its name.
func KeySecretName(namespace, name string) string {
	n := "repository-key-" + namespace + "-" + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return strings.TrimRight(n[:253-17], ".") + "-" + hex.EncodeToString(sum[:8])
}

// PasswordFromSecret returns the repository key held by a key Secret.
func PasswordFromSecret(s *corev1.Secret) (string, error) {
	p := string(s.Data[KeySecretKey])
	if p == "" {
		return "", fmt.Errorf("repository key Secret %s/%s has no %s", s.Namespace, s.Name, KeySecretKey)
	}
	return p, nil
}
