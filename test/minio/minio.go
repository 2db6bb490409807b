// Package minio runs the MinIO server built by `make tools` on loopback for integration
// tests: a random free port, a temporary data directory, optional TLS with a throwaway
// CA, buckets created through the S3 API, and Stop/Start to take the store away.
package minio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	miniogo "github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Root credentials of every test server. They only ever guard a loopback port.
const (
	AccessKey = "holdfast-test"
	SecretKey = "holdfast-test-secret"
)

// Options change what New starts.
type Options struct {
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a fresh CA
	// (Server.CA); without it the server talks plain HTTP.
	TLS bool
	// Buckets are created once the server is up.
	Buckets []string
	// Host is the IPv4 address to listen on, 127.0.0.1 when empty. The e2e tests
	// listen on an address of a network device they made, which pods can reach.
	Host string
}

// Server is one running (or stopped) MinIO.
type Server struct {
	// Endpoint is host:port, without scheme.
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// CA signs the server certificate when Options.TLS is set; nil otherwise.
	CA *CA

	dir     string
	console string
	tls     bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Start starts a server for one test and stops it, removing its data, when the test
// ends (also when it fails).
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stopping MinIO: %v", err)
		}
	})
	return s
}

// New starts a server. The caller must Close it; use Start in a test.
func New(opts Options) (*Server, error) {
	bin := filepath.Join(testenv.ToolsBin(), "minio")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s is missing: run `make tools`", bin)
	}
	dir, err := os.MkdirTemp("", "holdfast-minio-")
	if err != nil {
		return nil, err
	}
	s := &Server{AccessKey: AccessKey, SecretKey: SecretKey, dir: dir, tls: opts.TLS}
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ports, err := freePorts(host, 2)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.Endpoint = net.JoinHostPort(host, strconv.Itoa(ports[0]))
	s.console = net.JoinHostPort(host, strconv.Itoa(ports[1]))
	if opts.TLS {
		if s.CA, err = NewCA(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if err := s.CA.WriteServerCertificate(filepath.Join(dir, "certs"), host); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := s.Restart(); err != nil {
		_ = s.Close()
		return nil, err
	}
	for _, b := range opts.Buckets {
		if err := s.CreateBucket(b); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Restart starts the server again after Stop, on the same port and data.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("minio is already running")
	}
	args := []string{"server", "--quiet", "--address", s.Endpoint, "--console-address", s.console}
	if s.tls {
		args = append(args, "--certs-dir", filepath.Join(s.dir, "certs"))
	}
	args = append(args, filepath.Join(s.dir, "data"))
	logFile, err := os.OpenFile(filepath.Join(s.dir, "minio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(testenv.ToolsBin(), "minio"), args...)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The server must not outlive a test binary that crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting minio: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.log = cmd, done, logFile
	if err := s.waitReady(done); err != nil {
		s.stopLocked()
		out, _ := os.ReadFile(filepath.Join(s.dir, "minio.log"))
		return fmt.Errorf("%w; minio log:\n%s", err, out)
	}
	return nil
}

// waitReady waits until MinIO serves S3 requests. Its liveness endpoint answers before
// the object layer is initialised ("Server not initialized yet" to a request made
// then, seen on a loaded machine); the readiness endpoint only after.
func (s *Server) waitReady(done <-chan struct{}) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: s.transport()}
	url := s.URL() + "/minio/health/ready"
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("minio exited while starting")
		default:
		}
		if resp, err := hc.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("minio exited while starting")
		case <-time.After(100 * time.Millisecond): // polling an external process; nothing to watch
		}
	}
	return errors.New("minio did not become ready within 2 minutes")
}

// Stop kills the server (the data stays) so that tests can see a store go away.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	_ = s.log.Close()
	s.cmd, s.done, s.log = nil, nil, nil
}

// Close stops the server and removes its data.
func (s *Server) Close() error {
	s.Stop()
	return os.RemoveAll(s.dir)
}

// URL is the server's base URL.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Endpoint
	}
	return "http://" + s.Endpoint
}

func (s *Server) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.CA != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CA.CertPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return tr
}

// Client is an S3 client with the root credentials.
func (s *Server) Client() (*miniogo.Client, error) {
	return miniogo.New(s.Endpoint, &miniogo.Options{
		Creds:     credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:    s.tls,
		Transport: s.transport(),
	})
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.MakeBucket(ctx, name, miniogo.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("creating bucket %s: %w", name, err)
	}
	return nil
}

// Objects lists the object names under prefix in bucket, sorted.
func (s *Server) Objects(ctx context.Context, bucket, prefix string) ([]string, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	var names []string
	for obj := range c.ListObjects(ctx, bucket, miniogo.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		names = append(names, obj.Key)
	}
	sort.Strings(names)
	return names, nil
}

func freePorts(host string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Size is the total size in bytes of the objects under prefix in bucket.
func (s *Server) Size(ctx context.Context, bucket, prefix string) (int64, error) {
	c, err := s.Client()
	if err != nil {
		return 0, err
	}
	var total int64
	for obj := range c.ListObjects(ctx, bucket, miniogo.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return 0, obj.Err
		}
		total += obj.Size
	}
	return total, nil
}
