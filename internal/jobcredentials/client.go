package jobcredentials

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Client is the agent's side. It finds the manager through its webhook Service (the
// cluster IP: no cluster DNS needed) and trusts the certificate authority in the
// caBundle of the manager's MutatingWebhookConfiguration, which the manager (or
// cert-manager) keeps current.
type Client struct {
	// Reader reads the Service and the webhook configuration (uncached).
	Reader client.Reader
	// Namespace and Service name the manager's webhook Service.
	Namespace, Service string
	// WebhookConfiguration is the MutatingWebhookConfiguration whose caBundle is trusted.
	WebhookConfiguration string
	// URL, when set, is where the manager is reached instead of the Service (a
	// manager outside the cluster; tests).
	URL string
	// TokenFile is the agent's projected ServiceAccount token for Audience; it is read
	// for every request, as the kubelet renews it.
	TokenFile string

	mu     sync.Mutex
	http   *http.Client
	target string
}

// maxResponseBytes bounds what the agent reads of an answer.
const maxResponseBytes = 1 << 20

// Fetch asks the manager for the credentials of one job. Errors are *Error: Denied,
// Waiting or Unavailable.
func (c *Client) Fetch(ctx context.Context, req Request) (Grant, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Grant{}, err
	}
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return Grant{}, &Error{Outcome: Unavailable, Message: fmt.Sprintf("reading the agent's token for the manager: %v", err)}
	}
	var resp *http.Response
	// A second attempt looks the Service and the CA up again: the manager may have
	// rotated its certificate or moved.
	for attempt := range 2 {
		hc, target, err := c.connection(ctx, attempt > 0)
		if err != nil {
			return Grant{}, &Error{Outcome: Unavailable, Message: err.Error()}
		}
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, target+Path, bytes.NewReader(body))
		if err != nil {
			return Grant{}, err
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		if resp, err = hc.Do(r); err == nil {
			break
		}
		if attempt == 1 || ctx.Err() != nil {
			return Grant{}, &Error{Outcome: Unavailable, Message: fmt.Sprintf("the manager cannot be reached to hand over the repository key: %v", err)}
		}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return Grant{}, &Error{Outcome: Unavailable, Message: fmt.Sprintf("reading the manager's answer: %v", err)}
	}
	msg := strings.TrimSpace(string(data))
	switch resp.StatusCode {
	case http.StatusOK:
		var g Grant
		if err := json.Unmarshal(data, &g); err != nil {
			return Grant{}, &Error{Outcome: Unavailable, Message: fmt.Sprintf("reading the manager's answer: %v", err)}
		}
		return g, nil
	case http.StatusForbidden:
		return Grant{}, &Error{Outcome: Denied, Message: "the manager refused to hand over the repository key: " + msg}
	case http.StatusConflict:
		return Grant{}, &Error{Outcome: Waiting, Message: msg}
	}
	return Grant{}, &Error{Outcome: Unavailable, Message: fmt.Sprintf("the manager did not hand over the repository key (%s): %s", resp.Status, msg)}
}

// connection returns an HTTP client that trusts the manager's CA, and the manager's
// URL; refresh looks both up again.
func (c *Client) connection(ctx context.Context, refresh bool) (*http.Client, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.http != nil && !refresh {
		return c.http, c.target, nil
	}
	pool, err := c.trusted(ctx)
	if err != nil {
		return nil, "", err
	}
	target, serverName := c.URL, ""
	if target == "" {
		svc := &corev1.Service{}
		if err := c.Reader.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Service}, svc); err != nil {
			return nil, "", fmt.Errorf("finding the manager's Service %s/%s: %w", c.Namespace, c.Service, err)
		}
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			return nil, "", fmt.Errorf("the manager's Service %s/%s has no cluster IP and port", c.Namespace, c.Service)
		}
		target = "https://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
		// The serving certificate is issued for the Service's DNS name.
		serverName = c.Service + "." + c.Namespace + ".svc"
	} else if u, err := url.Parse(target); err == nil {
		serverName = u.Hostname()
	}
	c.target = strings.TrimSuffix(target, "/")
	c.http = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     time.Minute,
		},
	}
	return c.http, c.target, nil
}

// trusted is the pool of the caBundles of the manager's webhook configuration.
func (c *Client) trusted(ctx context.Context) (*x509.CertPool, error) {
	cfg := &admissionv1.MutatingWebhookConfiguration{}
	if err := c.Reader.Get(ctx, types.NamespacedName{Name: c.WebhookConfiguration}, cfg); err != nil {
		return nil, fmt.Errorf("reading the manager's certificate authority from MutatingWebhookConfiguration %s: %w", c.WebhookConfiguration, err)
	}
	pool := x509.NewCertPool()
	found := false
	for _, w := range cfg.Webhooks {
		if pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("MutatingWebhookConfiguration %s has no caBundle yet: the manager has not issued its certificate", c.WebhookConfiguration)
	}
	return pool, nil
}
