package webhookcert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// Keys of the Secret. tls.crt and tls.key make it a kubernetes.io/tls Secret. ca.crt is
// the bundle the webhook configurations trust: the CA that signed tls.crt first, then
// the next CA while a CA renewal is under way, then earlier CAs until they expire.
// ca.key is the key of the first CA, so that a new serving certificate can be signed
// by the CA the API servers already trust. The next-ca.* keys exist only during a CA
// renewal: the successor CA and its key, and when the caBundles were seen to hold it.
const (
	keyCert          = "tls.crt"
	keyKey           = "tls.key"
	keyCA            = "ca.crt"
	keyCAKey         = "ca.key"
	keyNextCA        = "next-ca.crt"
	keyNextCAKey     = "next-ca.key"
	keyNextCATrusted = "next-ca.trusted-since"
)

const (
	caCommonName    = "holdfast-webhook-ca"
	pemCertificate  = "CERTIFICATE"
	pemECPrivateKey = "EC PRIVATE KEY"
)

// clockSkew backdates NotBefore so that an API server whose clock is a little behind
// the manager's still accepts a fresh certificate.
const clockSkew = time.Hour

// timings are the durations that decide when a certificate or a CA is replaced.
type timings struct {
	// validity and rotateBefore are the serving certificate's.
	validity, rotateBefore time.Duration
	// caValidity and caRotateBefore are the CA's; caOverlap is how long a new CA is
	// in every caBundle before a serving certificate it signed is served.
	caValidity, caRotateBefore, caOverlap time.Duration
}

// bundle is what the Secret holds.
type bundle struct {
	certPEM, keyPEM, caPEM []byte
	caKeyPEM               []byte
	nextCAPEM, nextKeyPEM  []byte
	// nextTrustedSince is when a replica saw every caBundle hold the next CA; zero
	// until then.
	nextTrustedSince time.Time
}

func (b bundle) data() map[string][]byte {
	d := map[string][]byte{keyCert: b.certPEM, keyKey: b.keyPEM, keyCA: b.caPEM}
	if len(b.caKeyPEM) > 0 {
		d[keyCAKey] = b.caKeyPEM
	}
	if len(b.nextCAPEM) > 0 {
		d[keyNextCA], d[keyNextCAKey] = b.nextCAPEM, b.nextKeyPEM
		if !b.nextTrustedSince.IsZero() {
			d[keyNextCATrusted] = []byte(b.nextTrustedSince.UTC().Format(time.RFC3339))
		}
	}
	return d
}

// files are what the certificate directory receives: no CA keys.
func (b bundle) files() map[string][]byte {
	return map[string][]byte{keyCert: b.certPEM, keyKey: b.keyPEM, keyCA: b.caPEM}
}

func bundleFrom(data map[string][]byte) bundle {
	b := bundle{
		certPEM: data[keyCert], keyPEM: data[keyKey], caPEM: data[keyCA], caKeyPEM: data[keyCAKey],
		nextCAPEM: data[keyNextCA], nextKeyPEM: data[keyNextCAKey],
	}
	if t, err := time.Parse(time.RFC3339, string(data[keyNextCATrusted])); err == nil {
		b.nextTrustedSince = t
	}
	return b
}

// dnsNames are the names the API server may use to reach the webhook Service.
func dnsNames(service, namespace string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
}

// authority is a CA that can sign.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (a authority) certPEM() []byte { return encodeCert(a.cert) }

func (a authority) keyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(a.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemECPrivateKey, Bytes: der}), nil
}

// newAuthority makes a self-signed CA valid from now for validity.
func newAuthority(now time.Time, validity time.Duration) (authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return authority{}, fmt.Errorf("generating the CA key: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: caCommonName, Organization: []string{"holdfast"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return authority{}, fmt.Errorf("signing the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return authority{}, err
	}
	return authority{cert: cert, key: key}, nil
}

// parseAuthority reads a CA and its key, and says why they cannot sign at now.
func parseAuthority(certPEM, keyPEM []byte, now time.Time) (authority, error) {
	certs := parseCerts(certPEM)
	if len(certs) == 0 {
		return authority{}, errors.New("no CA certificate")
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return authority{}, errors.New("no CA key")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return authority{}, fmt.Errorf("the CA key: %w", err)
	}
	a := authority{cert: certs[0], key: key}
	if pub, ok := a.cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return authority{}, errors.New("the CA key does not match the CA certificate")
	}
	if !a.cert.IsCA {
		return authority{}, errors.New("the CA certificate is not a CA")
	}
	if now.Before(a.cert.NotBefore) || !now.Before(a.cert.NotAfter) {
		return authority{}, fmt.Errorf("the CA is valid only from %s to %s", stamp(a.cert.NotBefore), stamp(a.cert.NotAfter))
	}
	return a, nil
}

// signLeaf issues a serving certificate for service.namespace, valid from now for
// validity but never beyond the CA. It returns the certificate and key in PEM.
func (a authority) signLeaf(service, namespace string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the serving key: %w", err)
	}
	names := dnsNames(service, namespace)
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"holdfast"}},
		DNSNames:     names,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     minTime(now.Add(validity), a.cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: pemECPrivateKey, Bytes: keyDER}), nil
}

// trustBundle is first, then the others that are still valid at now, each once.
func trustBundle(now time.Time, first *x509.Certificate, others ...*x509.Certificate) []byte {
	out := encodeCert(first)
	seen := [][]byte{first.Raw}
	for _, c := range others {
		if !now.Before(c.NotAfter) || slices.ContainsFunc(seen, func(raw []byte) bool { return bytes.Equal(raw, c.Raw) }) {
			continue
		}
		seen = append(seen, c.Raw)
		out = append(out, encodeCert(c)...)
	}
	return out
}

// next decides what the Secret must hold at now, given what it holds (b). It returns
// b itself and an empty reason when nothing is to change. The rule it keeps: the served
// certificate always chains to a CA every caBundle has held for at least caOverlap.
//
//   - A serving certificate due for renewal is signed by the same CA: the caBundle does
//     not change.
//   - A CA due for renewal gets a successor, which is added to the bundle (old first,
//     still signing). Only once a replica has seen every caBundle hold it
//     (nextTrustedSince, set by the Rotator) and caOverlap has passed does the
//     successor sign the served certificate. The old CA stays in the bundle until it
//     expires.
//   - Only when nothing usable is served (first start, an expired or foreign
//     certificate, a deleted Secret) is a certificate issued and served at once, since
//     then there is no working state to keep.
func (b bundle) next(service, namespace string, now time.Time, tm timings) (bundle, string, error) {
	cas := parseCerts(b.caPEM)
	signer, signerErr := parseAuthority(b.caPEM, b.caKeyPEM, now)
	_, leafErr := b.checkLeaf(service, namespace, now)
	var successor *authority
	if len(b.nextCAPEM) > 0 {
		a, err := parseAuthority(b.nextCAPEM, b.nextKeyPEM, now)
		if err == nil && slices.ContainsFunc(cas, a.cert.Equal) {
			successor = &a
		}
	}

	switch {
	case leafErr != nil && signerErr == nil:
		return b.withLeaf(signer, service, namespace, now, tm, fmt.Sprintf("the served certificate cannot be used (%v); signing a new one with the trusted CA", leafErr))
	case leafErr != nil && successor != nil:
		return b.promote(*successor, cas, service, namespace, now, tm, fmt.Sprintf("the served certificate cannot be used (%v) and the current CA cannot sign (%v); switching to the next CA at once", leafErr, signerErr))
	case leafErr != nil:
		reason := fmt.Sprintf("no usable certificate (%v) and no CA to sign one (%v); issuing a new CA and certificate", leafErr, signerErr)
		ca, err := newAuthority(now, tm.caValidity)
		if err != nil {
			return bundle{}, "", err
		}
		fresh := bundle{caPEM: trustBundle(now, ca.cert, cas...)}
		return fresh.withLeaf(ca, service, namespace, now, tm, reason)

	case successor != nil:
		// A CA renewal is under way and the served certificate still works.
		if b.nextTrustedSince.IsZero() || now.Before(b.nextTrustedSince.Add(tm.caOverlap)) {
			return b, "", nil
		}
		return b.promote(*successor, cas, service, namespace, now, tm, fmt.Sprintf("every caBundle has trusted the next CA since %s; serving a certificate it signs", stamp(b.nextTrustedSince)))

	case signerErr != nil || !now.Add(tm.caRotateBefore).Before(signer.cert.NotAfter):
		why := "it expires at " + stamp(cas[0].NotAfter)
		if signerErr != nil {
			why = signerErr.Error()
		}
		ca, err := newAuthority(now, tm.caValidity)
		if err != nil {
			return bundle{}, "", err
		}
		keyPEM, err := ca.keyPEM()
		if err != nil {
			return bundle{}, "", err
		}
		out := b
		out.caPEM = trustBundle(now, cas[0], append([]*x509.Certificate{ca.cert}, cas[1:]...)...)
		out.nextCAPEM, out.nextKeyPEM, out.nextTrustedSince = ca.certPEM(), keyPEM, time.Time{}
		return out, fmt.Sprintf("the CA must be renewed (%s); adding its successor to the caBundle, to be served after %s", why, tm.caOverlap), nil

	case !now.Add(tm.rotateBefore).Before(b.leaf().NotAfter):
		return b.withLeaf(signer, service, namespace, now, tm, "the served certificate expires at "+stamp(b.leaf().NotAfter)+"; signing a new one with the same CA")

	case len(b.nextCAPEM) > 0 || !bytes.Equal(b.caPEM, trustBundle(now, cas[0], cas...)):
		out := b
		out.caPEM = trustBundle(now, cas[0], cas...)
		out.nextCAPEM, out.nextKeyPEM, out.nextTrustedSince = nil, nil, time.Time{}
		return out, "dropping expired or unusable CAs", nil
	}
	return b, "", nil
}

// withLeaf is b with a new serving certificate signed by ca, which must be the first
// CA of b's bundle.
func (b bundle) withLeaf(ca authority, service, namespace string, now time.Time, tm timings, reason string) (bundle, string, error) {
	certPEM, keyPEM, err := ca.signLeaf(service, namespace, now, tm.validity)
	if err != nil {
		return bundle{}, "", err
	}
	caKeyPEM, err := ca.keyPEM()
	if err != nil {
		return bundle{}, "", err
	}
	out := b
	out.certPEM, out.keyPEM, out.caKeyPEM = certPEM, keyPEM, caKeyPEM
	return out, reason, nil
}

// promote makes the successor the signing CA: first in the bundle, the previous CAs
// after it until they expire, and a serving certificate it signs.
func (b bundle) promote(successor authority, cas []*x509.Certificate, service, namespace string, now time.Time, tm timings, reason string) (bundle, string, error) {
	out := bundle{caPEM: trustBundle(now, successor.cert, cas...)}
	return out.withLeaf(successor, service, namespace, now, tm, reason)
}

func (b bundle) leaf() *x509.Certificate {
	if certs := parseCerts(b.certPEM); len(certs) > 0 {
		return certs[0]
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})
}

func parseCerts(pemBytes []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, pemBytes = pem.Decode(pemBytes)
		if block == nil {
			return out
		}
		if block.Type != pemCertificate {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// errUnusable says why a stored serving certificate cannot be served.
var errUnusable = errors.New("certificate cannot be served")

// checkLeaf returns the key pair of b when it can be served for service.namespace at
// now: it is for that name, valid at now and signed by the first CA of b's bundle. It
// does not look at how soon the certificate expires; next does.
func (b bundle) checkLeaf(service, namespace string, now time.Time) (*tls.Certificate, error) {
	if len(b.certPEM) == 0 || len(b.keyPEM) == 0 || len(b.caPEM) == 0 {
		return nil, fmt.Errorf("%w: the Secret lacks %s, %s or %s", errUnusable, keyCert, keyKey, keyCA)
	}
	pair, err := tls.X509KeyPair(b.certPEM, b.keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnusable, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %v", errUnusable, err)
		}
	}
	want := dnsNames(service, namespace)[0]
	if !slices.Contains(leaf.DNSNames, want) {
		return nil, fmt.Errorf("%w: it is for %v, not %s", errUnusable, leaf.DNSNames, want)
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: it is valid only from %s", errUnusable, stamp(leaf.NotBefore))
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: it expired at %s", errUnusable, stamp(leaf.NotAfter))
	}
	cas := parseCerts(b.caPEM)
	if len(cas) == 0 {
		return nil, fmt.Errorf("%w: %s holds no certificate", errUnusable, keyCA)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cas[0])
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:     want,
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", errUnusable, err)
	}
	pair.Leaf = leaf
	return &pair, nil
}
