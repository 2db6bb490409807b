package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env, testenv.Options{}) }

// clock is a time source a test can move forward while a Rotator runs.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time            { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration)   { c.offset.Add(int64(d)) }
func (c *clock) At(d time.Duration) *clock { c.offset.Store(int64(d)); return c }
func newClock(offset time.Duration) *clock { return new(clock).At(offset) }

// fixture is one test's webhook configurations (cluster-scoped, so named after the
// test's namespace) and the options that point a Rotator at them.
type fixture struct {
	t          *testing.T
	env        *testenv.Env
	namespace  string
	validating string
	mutating   string
}

func newFixture(t *testing.T) *fixture {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	f := &fixture{t: t, env: e, namespace: ns, validating: "holdfast-test-validating-" + ns, mutating: "holdfast-test-mutating-" + ns}
	// Rules on a group nobody serves, failurePolicy Ignore: the configurations are real
	// objects for the API server but never called.
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{"test.holdfast.dev"}, APIVersions: []string{"v1"}, Resources: []string{"things"}},
	}}
	cc := admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
		Namespace: ns, Name: DefaultServiceName, Path: ptr.To("/validate"), Port: ptr.To[int32](443),
	}}
	none := admissionregistrationv1.SideEffectClassNone
	ignore := admissionregistrationv1.Ignore
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: f.validating}}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: f.mutating}}
	for _, name := range []string{"one.test.holdfast.dev", "two.test.holdfast.dev"} {
		vwc.Webhooks = append(vwc.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: name, ClientConfig: cc, Rules: rules, SideEffects: &none, FailurePolicy: &ignore, AdmissionReviewVersions: []string{"v1"},
		})
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: name, ClientConfig: cc, Rules: rules, SideEffects: &none, FailurePolicy: &ignore, AdmissionReviewVersions: []string{"v1"},
		})
	}
	ctx := t.Context()
	if err := e.Client.Create(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = e.Client.Delete(ctx, vwc)
		_ = e.Client.Delete(ctx, mwc)
	})
	return f
}

func (f *fixture) options(now func() time.Time) Options {
	return Options{
		Client:                          f.env.Client,
		Namespace:                       f.namespace,
		CertDir:                         f.t.TempDir(),
		ValidatingWebhookConfigurations: []string{f.validating},
		MutatingWebhookConfigurations:   []string{f.mutating},
		Now:                             now,
		Log:                             testr.New(f.t),
	}
}

// start runs a Rotator until the test ends and waits until it is ready.
func (f *fixture) start(opts Options) *Rotator {
	f.t.Helper()
	r, err := New(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("Start returned %v", err)
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		f.t.Fatalf("the rotator stopped before it was ready: %v", err)
	case <-time.After(2 * time.Minute):
		f.t.Fatal("the rotator was not ready within 2 minutes")
	}
	return r
}

func (f *fixture) secret() *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := f.env.Client.Get(f.t.Context(), types.NamespacedName{Namespace: f.namespace, Name: DefaultSecretName}, s); err != nil {
		f.t.Fatalf("reading the certificate Secret: %v", err)
	}
	return s
}

// caBundles returns the caBundle of every webhook of both configurations, as stored.
func (f *fixture) caBundles() [][]byte {
	f.t.Helper()
	ctx := f.t.Context()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := f.env.Client.Get(ctx, types.NamespacedName{Name: f.validating}, vwc); err != nil {
		f.t.Fatal(err)
	}
	if err := f.env.Client.Get(ctx, types.NamespacedName{Name: f.mutating}, mwc); err != nil {
		f.t.Fatal(err)
	}
	var out [][]byte
	for _, w := range vwc.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	for _, w := range mwc.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// handshake serves r's certificate on a local TLS listener and connects to it as the
// API server would: trusting only caBundle, asking for the Service's DNS name. It
// returns the certificate the server presented.
func handshake(t *testing.T, r *Rotator, caBundle []byte, namespace string) (*x509.Certificate, error) {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	r.ConfigureTLS(cfg)
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		_ = c.Close()
	}()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatal("the caBundle holds no certificate")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Minute}, "tcp", l.Addr().String(), &tls.Config{
		RootCAs: roots, ServerName: DefaultServiceName + "." + namespace + ".svc", MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func leafOf(t *testing.T, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	certs := parseCerts(s.Data[keyCert])
	if len(certs) != 1 {
		t.Fatalf("tls.crt holds %d certificates, want 1", len(certs))
	}
	return certs[0]
}

// A fresh install: the manager creates the Secret, writes the files, sets the caBundle
// of every webhook, and a client that trusts only that caBundle can reach it under the
// Service's name.
func TestIssuesCertificateAndInjectsCABundle(t *testing.T) {
	f := newFixture(t)
	opts := f.options(time.Now)
	r := f.start(opts)

	s := f.secret()
	if s.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type = %s, want %s", s.Type, corev1.SecretTypeTLS)
	}
	for _, k := range []string{keyCert, keyKey, keyCA} {
		if len(s.Data[k]) == 0 {
			t.Errorf("Secret lacks %s", k)
		}
		onDisk, err := os.ReadFile(filepath.Join(opts.CertDir, k))
		if err != nil {
			t.Errorf("cert dir: %v", err)
		} else if !bytes.Equal(onDisk, s.Data[k]) {
			t.Errorf("cert dir %s differs from the Secret", k)
		}
	}
	bundles := f.caBundles()
	if len(bundles) != 4 {
		t.Fatalf("got %d webhooks, want 4", len(bundles))
	}
	for i, b := range bundles {
		if !bytes.Equal(b, s.Data[keyCA]) {
			t.Errorf("webhook %d: caBundle is not the Secret's ca.crt", i)
		}
	}
	served, err := handshake(t, r, bundles[0], f.namespace)
	if err != nil {
		t.Fatalf("a client trusting the injected caBundle cannot connect: %v", err)
	}
	if served.SerialNumber.Cmp(leafOf(t, s).SerialNumber) != 0 {
		t.Errorf("served certificate %s, the Secret holds %s", served.SerialNumber, leafOf(t, s).SerialNumber)
	}
	if err := r.ReadyCheck(nil); err != nil {
		t.Errorf("ReadyCheck after Ready: %v", err)
	}
}

// A restart (or a second replica) reuses the stored certificate: the Secret is not
// written again and both serve the same certificate.
func TestRestartReusesCertificate(t *testing.T) {
	f := newFixture(t)
	first := f.start(f.options(time.Now))
	before := f.secret()

	second := f.start(f.options(time.Now))
	after := f.secret()
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the second start rewrote the Secret (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
	}
	a, err := first.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := second.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Certificate[0], b.Certificate[0]) {
		t.Error("the two rotators serve different certificates")
	}
}

// A certificate that enters the rotation window is replaced while the manager runs by
// one the same CA signs, so the bundle the API servers hold trusts both the old one (a
// replica that has not switched yet) and the new one, which is served at once.
func TestRotatesBeforeExpiry(t *testing.T) {
	f := newFixture(t)
	clk := newClock(0)
	opts := f.options(clk.Now)
	opts.CheckInterval = 50 * time.Millisecond
	r := f.start(opts)
	old := f.secret()
	oldLeaf := leafOf(t, old)

	// One hour into the rotation window.
	clk.Advance(DefaultValidity - DefaultRotateBefore + time.Hour)

	var current *corev1.Secret
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		current = f.secret()
		if bytes.Equal(current.Data[keyCert], old.Data[keyCert]) {
			return false, nil
		}
		for _, b := range f.caBundles() {
			if !bytes.Equal(b, current.Data[keyCA]) {
				return false, nil
			}
		}
		served, err := r.GetCertificate(nil)
		return err == nil && bytes.Equal(served.Certificate[0], parseCerts(current.Data[keyCert])[0].Raw), nil
	})
	if err != nil {
		t.Fatalf("the certificate was not rotated, injected and served: %v", err)
	}
	newLeaf := leafOf(t, current)
	if !newLeaf.NotAfter.After(oldLeaf.NotAfter) {
		t.Errorf("new certificate expires %s, not after the old one's %s", newLeaf.NotAfter, oldLeaf.NotAfter)
	}
	if !bytes.Equal(current.Data[keyCA], old.Data[keyCA]) {
		t.Error("renewing the serving certificate changed ca.crt; the same CA must sign it")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(current.Data[keyCA])
	for name, leaf := range map[string]*x509.Certificate{"old": oldLeaf, "new": newLeaf} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: clk.Now(), DNSName: DefaultServiceName + "." + f.namespace + ".svc"}); err != nil {
			t.Errorf("the %s certificate is not trusted by the new bundle: %v", name, err)
		}
	}
}

// A sync from Git that empties a caBundle (Argo CD Replace, a re-created
// configuration) is repaired at the next check.
func TestRepairsEmptiedCABundle(t *testing.T) {
	f := newFixture(t)
	opts := f.options(time.Now)
	opts.CheckInterval = 50 * time.Millisecond
	f.start(opts)
	want := f.secret().Data[keyCA]

	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := f.env.Client.Get(t.Context(), types.NamespacedName{Name: f.validating}, vwc); err != nil {
		t.Fatal(err)
	}
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if err := f.env.Client.Update(t.Context(), vwc); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		for _, b := range f.caBundles() {
			if !bytes.Equal(b, want) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the emptied caBundle was not restored: %v", err)
	}
}
