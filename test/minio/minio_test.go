package minio

import (
	"context"
	"strings"
	"testing"
	"time"

	miniogo "github.com/minio/minio-go/v7"
)

// TestStopStartTLS shows the helper's promises: TLS with its own CA, a bucket made
// through the S3 API, data surviving Stop and Restart, and the store refusing
// connections while stopped.
func TestStopStartTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MinIO")
	}
	s := Start(t, Options{TLS: true, Buckets: []string{"probe"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "probe", "a/b", strings.NewReader("x"), 1, miniogo.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := s.Objects(ctx, "probe", ""); err == nil {
		t.Fatal("listing a stopped server worked")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	names, err := s.Objects(ctx, "probe", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "a/b" {
		t.Fatalf("objects after restart: %v", names)
	}
}
