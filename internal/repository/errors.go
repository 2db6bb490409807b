package repository

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	miniogo "github.com/minio/minio-go/v7"
)

// Error is a repository or store failure a person can act on. Its Error() is one
// readable sentence; errors.Is matches it against the Err* kinds below by kind.
type Error struct {
	kind    *Error
	message string
	cause   error
}

func (e *Error) Error() string { return e.message }

// Unwrap returns the underlying error, kept for logs.
func (e *Error) Unwrap() error { return e.cause }

// Is matches errors of the same kind: errors.Is(err, ErrWrongKey).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.kind == t && e.kind == t
}

// Kind returns the kind (one of the Err* values).
func (e *Error) Kind() *Error { return e.kind }

// Reason is the kind as one CamelCase word, for condition reasons and events.
func (e *Error) Reason() string { return e.kind.message }

// Cause is the underlying error's text, for logs (never contains a secret).
func (e *Error) Cause() string {
	if e.cause == nil {
		return ""
	}
	return e.cause.Error()
}

func kind(reason string) *Error {
	e := &Error{message: reason}
	e.kind = e
	return e
}

// Kinds of Error. Compare with errors.Is.
var (
	// ErrWrongKey: the repository exists but was not written with this key.
	ErrWrongKey = kind("WrongKey")
	// ErrNotInitialized: there is no repository at the location yet.
	ErrNotInitialized = kind("NotInitialized")
	// ErrDamaged: the repository exists but cannot be read.
	ErrDamaged = kind("Damaged")
	// ErrExistingData: Initialize found data that is not a usable repository.
	ErrExistingData = kind("ExistingData")
	// ErrUnreachable: the store cannot be reached at all.
	ErrUnreachable = kind("StoreUnreachable")
	// ErrCredentials: the store rejected the credentials.
	ErrCredentials = kind("WrongCredentials")
	// ErrBucketMissing: the bucket does not exist.
	ErrBucketMissing = kind("BucketMissing")
	// ErrUntrustedCertificate: the store's TLS certificate is not trusted.
	ErrUntrustedCertificate = kind("UntrustedCertificate")
	// ErrSnapshotNotFound: no snapshot has this ID.
	ErrSnapshotNotFound = kind("SnapshotNotFound")
	// ErrLocked: another process held the repository's lock for longer than the
	// operation waits (restic: a prune or forget holds it exclusively, a backup or
	// restore shares it). Nothing is wrong: try again later, do not fail the work.
	ErrLocked = kind("RepositoryLocked")
)

func newError(k *Error, msg string, cause error) *Error {
	return &Error{kind: k, message: msg, cause: cause}
}

// ErrorReason returns err's Reason when it is an *Error, and "" otherwise.
func ErrorReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason()
	}
	return ""
}

func bucketMissing(st Store) error {
	return newError(ErrBucketMissing, fmt.Sprintf("Bucket %q does not exist on %s: create it (Holdfast never creates buckets) or correct spec.s3.bucket", st.S3.Bucket, st.S3.Endpoint), nil)
}

// classify turns a store error into an *Error with a sentence naming what to fix, or
// returns it unchanged when it is none of the known kinds.
func classify(err error, st Store) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) || errors.Is(err, context.Canceled) {
		return err
	}
	if st.Filesystem != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return newError(ErrUnreachable, fmt.Sprintf("The directory %s does not exist: mount it at the same path on the manager and every agent", st.Filesystem.Path), err)
		case errors.Is(err, os.ErrPermission):
			return newError(ErrCredentials, fmt.Sprintf("The directory %s is not writable by Holdfast (user %d, group %d): give that group write access to it (chgrp %d, chmod 2770)", st.Filesystem.Path, os.Getuid(), os.Getgid(), os.Getgid()), err)
		}
		return err
	}
	endpoint := st.S3.Endpoint
	var resp miniogo.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "NoSuchBucket":
			return newError(ErrBucketMissing, bucketMissing(st).Error(), err)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity":
			return credentialsError(st, err)
		}
		if resp.StatusCode == 403 {
			return credentialsError(st, err)
		}
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownAuthority) || errors.As(err, &verify) || errors.As(err, &invalid) || strings.Contains(err.Error(), "x509: ") {
		return newError(ErrUntrustedCertificate, fmt.Sprintf("The TLS certificate of %s is not signed by a trusted authority: set spec.s3.caBundle to the PEM of the authority that signs it", endpoint), err)
	}
	if errors.As(err, &hostname) {
		return newError(ErrUntrustedCertificate, fmt.Sprintf("The TLS certificate of %s is not valid for that name: use the host name the certificate was issued for in spec.s3.endpoint", endpoint), err)
	}
	var recordHeader tls.RecordHeaderError
	if errors.As(err, &recordHeader) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return newError(ErrUnreachable, fmt.Sprintf("%s speaks plain HTTP, not HTTPS: set spec.s3.insecure: true only if that is intended, or use its TLS port", endpoint), err)
	}
	var netErr net.Error
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) || errors.As(err, &netErr) || strings.Contains(err.Error(), "connection refused") {
		return newError(ErrUnreachable, fmt.Sprintf("The store endpoint %s cannot be reached: check spec.s3.endpoint and that the store is running and reachable from the cluster", endpoint), err)
	}
	return err
}

func credentialsError(st Store, err error) error {
	return newError(ErrCredentials, fmt.Sprintf("The store at %s rejected the credentials for bucket %q: check %s and %s in the credentials Secret and the key's permissions on the bucket", st.S3.Endpoint, st.S3.Bucket, SecretAccessKeyID, SecretSecretAccessKey), err)
}
