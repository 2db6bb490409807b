package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
)

// The names the agent is configured with, as config/ names them.
const (
	agentServiceAccount       = "holdfast-agent"
	managerWebhookConfigName  = "holdfast-mutating-webhook-configuration"
	agentPodName              = "holdfast-agent-node-1"
	managerTokenLifetimeHours = 4
)

// serveJobCredentials serves the manager's side of job credentials over TLS, as the
// manager does on its webhook server, and publishes its certificate authority in the
// webhook configuration the agent trusts. It returns the manager's URL.
func (f *fixture) serveJobCredentials(ctx context.Context) (url string, stop func(), err error) {
	caPEM, cert, err := selfSignedServing("127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(jobcredentials.Path, &jobcredentials.Server{
		Reader: f.env.Client, Reviewer: f.env.Client,
		Namespace: operatorNamespace, AgentServiceAccount: agentServiceAccount,
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	never := "https://127.0.0.1:1/never-called"
	cfg := &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: managerWebhookConfigName},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name:                    "restore-wait.holdfast.dev",
			ClientConfig:            admissionv1.WebhookClientConfig{URL: &never, CABundle: caPEM},
			Rules:                   []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create}, Rule: admissionv1.Rule{APIGroups: []string{"test.holdfast.dev"}, APIVersions: []string{"v1"}, Resources: []string{"nothing"}}}},
			SideEffects:             ptr.To(admissionv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionv1.Ignore),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if err := f.env.Client.Create(ctx, cfg); err != nil {
		srv.Close()
		return "", nil, err
	}
	return srv.URL, srv.Close, nil
}

// agentToken makes what the kubelet gives the agent pod: a token of the agent's
// ServiceAccount for the manager's audience, bound to a pod on node-1 (so the API
// server puts the node in it). It writes it to a file and returns the path.
func (f *fixture) agentToken(ctx context.Context) (string, error) {
	c := f.env.Client
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: agentServiceAccount, Namespace: operatorNamespace}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: agentPodName, Namespace: operatorNamespace},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: agentServiceAccount,
			Containers: []corev1.Container{{Name: "agent", Image: "holdfast:dev"}}},
	}
	if err := c.Create(ctx, sa); err != nil {
		return "", fmt.Errorf("creating the agent ServiceAccount: %w", err)
	}
	if err := c.Create(ctx, node); err != nil {
		return "", fmt.Errorf("creating node %s: %w", nodeName, err)
	}
	if err := c.Create(ctx, pod); err != nil {
		return "", fmt.Errorf("creating the agent pod: %w", err)
	}
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:         []string{jobcredentials.Audience},
		ExpirationSeconds: ptr.To(int64(managerTokenLifetimeHours * 3600)),
		BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("requesting the agent's token: %w", err)
	}
	path := filepath.Join(f.work, "agent-manager-token")
	return path, os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}

// selfSignedServing makes a certificate authority and a serving certificate for ip.
func selfSignedServing(ip string) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent test manager CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP(ip)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}, nil
}
