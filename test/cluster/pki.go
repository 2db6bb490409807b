package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec describes one leaf certificate signed by the cluster CA.
type certSpec struct {
	name   string // file name stem under pki/
	cn     string
	orgs   []string
	dns    []string
	ips    []net.IP
	server bool
	client bool
}

// certSpecs are every certificate the cluster's components present or use. The
// API server's names include the `kubernetes` Service's cluster IP and DNS names,
// because pods reach it through that Service. Every node's kubelet has a client
// certificate of its own (the Node authorizer and NodeRestriction tell nodes apart by
// it) and a serving certificate for its name and address.
func (c *Cluster) certSpecs() []certSpec {
	localhost := []net.IP{net.ParseIP(NodeIP)}
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: []net.IP{net.ParseIP(NodeIP), net.ParseIP(APIServiceIP)}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "etcd", cn: "etcd", dns: []string{"localhost"}, ips: localhost, server: true, client: true},
		{name: "admin", cn: "holdfast-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "kube-proxy", cn: "system:kube-proxy", client: true},
		{name: "front-proxy-client", cn: "front-proxy-client", client: true},
	}
	for _, n := range c.NodeList() {
		specs = append(specs,
			certSpec{name: "kubelet-client" + n.suffix, cn: "system:node:" + n.Name, orgs: []string{"system:nodes"}, client: true},
			certSpec{name: "kubelet-serving" + n.suffix, cn: "system:node:" + n.Name, orgs: []string{"system:nodes"},
				dns: []string{n.Name, "localhost"}, ips: []net.IP{net.ParseIP(n.IP)}, server: true})
	}
	return specs
}

// writePKI creates the cluster CA, the service-account signing key and every leaf
// certificate under pki/, unless they already exist (a second `up` keeps them, so a
// kubeconfig handed out earlier stays valid; it only adds the certificates of nodes
// the first did not have).
func (c *Cluster) writePKI() error {
	dir := c.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return c.writeMissingLeaves(dir)
	}
	caKey, caCert, err := newCA("holdfast-local-cluster-ca")
	if err != nil {
		return err
	}
	if err := writeKeyPair(dir, "ca", caKey, caCert); err != nil {
		return err
	}
	for _, s := range c.certSpecs() {
		key, cert, err := newLeaf(s, caKey, caCert)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", s.name, err)
		}
		if err := writeKeyPair(dir, s.name, key, cert); err != nil {
			return err
		}
	}
	saKey, err := newKey()
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "done"), nil, 0o600)
}

// writeMissingLeaves signs the leaf certificates that a finished PKI lacks with its CA.
func (c *Cluster) writeMissingLeaves(dir string) error {
	var missing []certSpec
	for _, s := range c.certSpecs() {
		if _, err := os.Stat(filepath.Join(dir, s.name+".crt")); err != nil {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	caKey, caCert, err := readKeyPair(dir, "ca")
	if err != nil {
		return err
	}
	for _, s := range missing {
		key, cert, err := newLeaf(s, caKey, caCert)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", s.name, err)
		}
		if err := writeKeyPair(dir, s.name, key, cert); err != nil {
			return err
		}
	}
	return nil
}

func readKeyPair(dir, name string) (*rsa.PrivateKey, *x509.Certificate, error) {
	read := func(file, typ string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != typ {
			return nil, fmt.Errorf("%s: no %s block", file, typ)
		}
		return block.Bytes, nil
	}
	keyDER, err := read(name+".key", "RSA PRIVATE KEY")
	if err != nil {
		return nil, nil, err
	}
	certDER, err := read(name+".crt", "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS1PrivateKey(keyDER)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(certDER)
	return key, cert, err
}

// newKey makes an RSA key: busybox's wget (the workload image's only HTTPS client)
// cannot negotiate with an ECDSA server certificate.
func newKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

func newCA(cn string) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func newLeaf(s certSpec, caKey *rsa.PrivateKey, ca *x509.Certificate) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writeKeyPair(dir, name string, key *rsa.PrivateKey, cert *x509.Certificate) error {
	if err := writePEM(filepath.Join(dir, name+".key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", cert.Raw)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// writeKubeconfig writes a kubeconfig for the client certificate pki/<name>.crt with
// the certificates embedded, so the file can be copied elsewhere.
func (c *Cluster) writeKubeconfig(path, name, user string) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(b), nil
	}
	ca, err1 := read(c.path("pki", "ca.crt"))
	crt, err2 := read(c.path("pki", name+".crt"))
	key, err3 := read(c.path("pki", name+".key"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: holdfast-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: holdfast-local
  context:
    cluster: holdfast-local
    user: %s
current-context: holdfast-local
`, c.APIServerURL(), ca, user, crt, key, user)
	return os.WriteFile(path, []byte(kc), 0o600)
}
