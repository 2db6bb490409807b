package webhookcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The wiring main.go uses: a real manager whose webhook server, started before the
// rotator, serves the rotator's certificate to a client that trusts only the injected
// caBundle, and whose /readyz includes the certificate.
func TestAddToManagerServesTheCertificate(t *testing.T) {
	f := newFixture(t)
	port, probe := freePort(t), freePort(t)
	mgr, err := ctrl.NewManager(f.env.Config, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "127.0.0.1:" + strconv.Itoa(probe),
		WebhookServer:          webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: t.TempDir()}),
		Logger:                 testr.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := f.options(time.Now)
	opts.Client = nil // AddToManager makes an uncached one
	r, err := AddToManager(mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddReadyzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("the manager stopped: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the certificate was not ready within 2 minutes")
	}
	caBundle := f.caBundles()[0]
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caBundle)
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: DefaultServiceName + "." + f.namespace + ".svc", MinVersion: tls.VersionTLS12}}
		conn, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		var certErr *tls.CertificateVerificationError
		switch {
		case errors.As(err, &certErr):
			return false, err // served, but not with a certificate the bundle trusts
		case err != nil:
			return false, nil // not listening yet
		}
		return true, conn.Close()
	})
	if err != nil {
		t.Fatalf("the webhook server does not serve a certificate trusted by the caBundle: %v", err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(probe) + "/readyz/webhook-cert")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("/readyz/webhook-cert never answered 200: %v", err)
	}
}
