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
	"sort"
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

// KeySecretName is the name, in the operator namespace, under which the manager
// creates the key Secret of BackupRepository name in namespace. It ends in a hash of
// "namespace/name": joining the two with a dash alone made namespace team-a with
// repository main-kopia and namespace team with a-main-kopia share one Secret, and so
// one key. The readable part before the hash is cut, and the dots and dashes at the
// cut dropped, when the whole would be longer than a Secret's 253 characters.
//
// A Secret is this repository's key only when its labels say so (see
// KeySecretLabels); the name merely makes collisions unlikely. Repositories whose key
// Secret was made under the earlier scheme (repository-key-<namespace>-<name>) keep
// it: status.keySecretName and the labels find it.
func KeySecretName(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	suffix := "-" + hex.EncodeToString(sum[:8])
	readable := "repository-key-" + namespace + "-" + name
	if limit := 253 - len(suffix); len(readable) > limit {
		readable = strings.TrimRight(readable[:limit], ".-")
	}
	return readable + suffix
}

// PasswordFromSecret returns the repository key held by a key Secret.
func PasswordFromSecret(s *corev1.Secret) (string, error) {
	p := string(s.Data[KeySecretKey])
	if p == "" {
		return "", fmt.Errorf("repository key Secret %s/%s has no %s", s.Namespace, s.Name, KeySecretKey)
	}
	return p, nil
}

// HasData reports whether anything at all is stored at the repository's location of
// cfg (cfg.Password is not needed): a repository, or data that is not one.
func HasData(ctx context.Context, cfg Config) (bool, error) {
	if err := preflight(ctx, cfg.Store); err != nil {
		return false, err
	}
	empty, err := locationEmpty(ctx, cfg.Store, cfg.location())
	if err != nil {
		return false, classify(err, cfg.Store)
	}
	return !empty, nil
}

// Location is the path of the repository of uploader for namespace relative to the
// store's root: <uploader>/<namespace>. Objects Holdfast keeps beside a repository
// (its key escrow) are named after it, outside the repository's own directory.
func Location(uploader v1.Uploader, namespace string) string {
	return Config{Uploader: uploader, Namespace: namespace}.location()
}

// maxObjectSize bounds what ReadObject reads: Holdfast's own objects are small.
const maxObjectSize = 1 << 20

// ReadObject returns the object at rel (relative to the store's root). An object that
// does not exist is an error wrapping os.ErrNotExist.
func (s Store) ReadObject(ctx context.Context, rel string) ([]byte, error) {
	if s.Filesystem != nil {
		f, err := os.Open(filepath.Join(s.Filesystem.Path, filepath.FromSlash(rel)))
		if err != nil {
			return nil, classifyObject(err, s)
		}
		defer f.Close()
		return readLimited(f)
	}
	c, err := s.S3.client()
	if err != nil {
		return nil, err
	}
	obj, err := c.GetObject(ctx, s.S3.Bucket, s.S3.key(rel), miniogo.GetObjectOptions{})
	if err != nil {
		return nil, classifyObject(err, s)
	}
	defer obj.Close()
	data, err := readLimited(obj)
	if err != nil {
		return nil, classifyObject(err, s)
	}
	return data, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxObjectSize+1))
	if err == nil && len(data) > maxObjectSize {
		err = fmt.Errorf("object is larger than %d bytes", maxObjectSize)
	}
	return data, err
}

// ObjectExists reports whether there is an object at rel.
func (s Store) ObjectExists(ctx context.Context, rel string) (bool, error) {
	if s.Filesystem != nil {
		_, err := os.Stat(filepath.Join(s.Filesystem.Path, filepath.FromSlash(rel)))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return err == nil, classify(err, s)
	}
	c, err := s.S3.client()
	if err != nil {
		return false, err
	}
	_, err = c.StatObject(ctx, s.S3.Bucket, s.S3.key(rel), miniogo.StatObjectOptions{})
	if err = classifyObject(err, s); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// WriteObject stores data at rel, replacing what was there. On S3 that is one PUT; on a
// filesystem a temporary file beside it, synced and renamed over it, so that a reader
// never sees half an object. Files are shared with the group as repositories are
// (filesystem.go).
func (s Store) WriteObject(ctx context.Context, rel string, data []byte) error {
	if s.Filesystem != nil {
		return classify(writeFileAtomically(filepath.Join(s.Filesystem.Path, filepath.FromSlash(rel)), data), s)
	}
	c, err := s.S3.client()
	if err != nil {
		return err
	}
	_, err = c.PutObject(ctx, s.S3.Bucket, s.S3.key(rel), bytes.NewReader(data), int64(len(data)), miniogo.PutObjectOptions{ContentType: "application/octet-stream"})
	return classify(err, s)
}

func writeFileAtomically(p string, data []byte) error {
	dir := filepath.Dir(p)
	if err := makeSharedDir(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(sharedFileMode &^ 0o220); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// List returns the names directly below rel: the directories (without a trailing
// slash) and the objects, each sorted. Nothing stored there is an empty answer.
func (s Store) List(ctx context.Context, rel string) (dirs, objects []string, err error) {
	if s.Filesystem != nil {
		entries, err := os.ReadDir(filepath.Join(s.Filesystem.Path, filepath.FromSlash(rel)))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, classify(err, s)
		}
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			} else if e.Type().IsRegular() {
				objects = append(objects, e.Name())
			}
		}
		return dirs, objects, nil
	}
	c, err := s.S3.client()
	if err != nil {
		return nil, nil, err
	}
	prefix := strings.TrimPrefix(s.S3.key(rel)+"/", "/")
	for obj := range c.ListObjects(ctx, s.S3.Bucket, miniogo.ListObjectsOptions{Prefix: prefix}) {
		if obj.Err != nil {
			return nil, nil, classify(obj.Err, s)
		}
		name := strings.TrimPrefix(obj.Key, prefix)
		if d, ok := strings.CutSuffix(name, "/"); ok {
			dirs = append(dirs, d)
		} else {
			objects = append(objects, name)
		}
	}
	sort.Strings(dirs)
	sort.Strings(objects)
	return dirs, objects, nil
}

// classifyObject is classify, and a missing object wraps os.ErrNotExist.
func classifyObject(err error, s Store) error {
	if err == nil {
		return nil
	}
	if s.Filesystem != nil && errors.Is(err, os.ErrNotExist) {
		return err
	}
	if resp := miniogo.ToErrorResponse(err); resp.Code == "NoSuchKey" {
		return fmt.Errorf("%w: %s", os.ErrNotExist, resp.Key)
	}
	return classify(err, s)
}
