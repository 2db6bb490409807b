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

// Keys of the Secret. tls.crt and tls.key make it a kubernetes.io/tls Secret; ca.crt is
// the bundle the webhook configurations trust: the CA that signed tls.crt first, then
// the previous CA while it is still valid, so that a rotation never leaves a webhook
// replica serving a certificate the API server does not trust.
const (
	keyCert = "tls.crt"
	keyKey  = "tls.key"
	keyCA   = "ca.crt"
)

// clockSkew backdates NotBefore so that an API server whose clock is a little behind
// the manager's still accepts a fresh certificate.
const clockSkew = time.Hour

// bundle is what the Secret holds.
type bundle struct {
	certPEM, keyPEM, caPEM []byte
}

func (b bundle) data() map[string][]byte {
	return map[string][]byte{keyCert: b.certPEM, keyKey: b.keyPEM, keyCA: b.caPEM}
}

func bundleFrom(data map[string][]byte) bundle {
	return bundle{certPEM: data[keyCert], keyPEM: data[keyKey], caPEM: data[keyCA]}
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

// issue makes a new CA and a serving certificate it signs, valid from now for validity.
// previousCA (PEM, may be empty) is appended to the new bundle, keeping only the
// certificates still valid at now.
func issue(service, namespace string, now time.Time, validity time.Duration, previousCA []byte) (bundle, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return bundle{}, fmt.Errorf("generating the CA key: %w", err)
	}
	notBefore, notAfter := now.Add(-clockSkew), now.Add(validity)
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "holdfast-webhook-ca", Organization: []string{"holdfast"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return bundle{}, fmt.Errorf("signing the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return bundle{}, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return bundle{}, fmt.Errorf("generating the serving key: %w", err)
	}
	names := dnsNames(service, namespace)
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"holdfast"}},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return bundle{}, fmt.Errorf("signing the serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return bundle{}, err
	}

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for _, old := range parseCerts(previousCA) {
		if now.Before(old.NotAfter) && !bytes.Equal(old.Raw, caDER) {
			caPEM = append(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: old.Raw})...)
			break // the newest previous CA is enough: it signed what replicas may still serve
		}
	}
	return bundle{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		caPEM:   caPEM,
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func parseCerts(pemBytes []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, pemBytes = pem.Decode(pemBytes)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// errRotate says why a stored bundle must be replaced.
var errRotate = errors.New("certificate must be replaced")

// check returns the key pair of b when it is usable for service.namespace until at
// least now+rotateBefore, and an error wrapping errRotate that says why otherwise.
func (b bundle) check(service, namespace string, now time.Time, rotateBefore time.Duration) (*tls.Certificate, error) {
	if len(b.certPEM) == 0 || len(b.keyPEM) == 0 || len(b.caPEM) == 0 {
		return nil, fmt.Errorf("%w: the Secret lacks %s, %s or %s", errRotate, keyCert, keyKey, keyCA)
	}
	pair, err := tls.X509KeyPair(b.certPEM, b.keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRotate, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %v", errRotate, err)
		}
	}
	want := dnsNames(service, namespace)[0]
	if !slices.Contains(leaf.DNSNames, want) {
		return nil, fmt.Errorf("%w: it is for %v, not %s", errRotate, leaf.DNSNames, want)
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: it is valid only from %s", errRotate, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Add(rotateBefore).Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: it expires at %s, within the rotation window of %s", errRotate, leaf.NotAfter.UTC().Format(time.RFC3339), rotateBefore)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b.caPEM) {
		return nil, fmt.Errorf("%w: %s holds no certificate", errRotate, keyCA)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:     want,
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", errRotate, err)
	}
	pair.Leaf = leaf
	return &pair, nil
}
