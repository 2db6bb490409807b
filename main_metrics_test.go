package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// scrapeClient trusts any certificate: the endpoint serves a self-signed one unless
// --metrics-cert-dir names another, and what is tested here is who may read it.
var scrapeClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // self-signed test endpoint
}

// scrape gets url with the bearer token (none if empty) and returns the status and body.
func scrape(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// waitTLS waits until addr accepts TLS connections, and fails at once if it answers
// in plain HTTP.
func waitTLS(ctx context.Context, addr string) error {
	var plain error
	err := testenv.Poll(ctx, 2*time.Minute, func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reachability
		if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) {
			plain = fmt.Errorf("%s answers, but not in TLS: %w", addr, err)
			return nil
		}
		if err != nil {
			return err
		}
		return conn.Close()
	})
	if plain != nil {
		return plain
	}
	return err
}

// waitAllowed waits until the API server's RBAC has seen a new binding: the metrics
// filter caches a denial for 30 s, so a scrape must not race the binding.
func waitAllowed(t *testing.T, env *testenv.Env, user string, allowed bool) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("RBAC says %s may get /metrics: %v", user, allowed), func() error {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:                  user,
			Groups:                []string{"system:serviceaccounts", "system:authenticated"},
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
		}}
		if err := env.Client.Create(t.Context(), sar); err != nil {
			return err
		}
		if sar.Status.Allowed != allowed {
			return fmt.Errorf("allowed = %v", sar.Status.Allowed)
		}
		return nil
	})
}

// bindMetricsReader binds ServiceAccount ns/name to ClusterRole holdfast-metrics-reader,
// as an install binds a Prometheus, until the test ends, and waits until the API
// server says it may get /metrics.
func bindMetricsReader(t *testing.T, env *testenv.Env, ns, name string) {
	t.Helper()
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-reads-holdfast-" + ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "holdfast-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}
	if err := env.Client.Create(t.Context(), binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), binding) })
	waitAllowed(t, env, "system:serviceaccount:"+ns+":"+name, true)
}

// TestMetricsNeedATokenAllowedToGetMetrics starts a manager with the metrics options
// of main.go, as the manager's and as the agent's ServiceAccount with the roles of
// config/rbac (so their grants to check tokens are tested too), and scrapes it over
// HTTPS: no token is 401, a ServiceAccount without the reader role 403, one bound to
// ClusterRole holdfast-metrics-reader 200 with controller-runtime's metrics.
func TestMetricsNeedATokenAllowedToGetMetrics(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := t.Context()
	if err := env.InstallRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t, nil)
	otherToken, err := env.ServiceAccountToken(ctx, ns, "not-a-reader")
	if err != nil {
		t.Fatal(err)
	}
	readerToken, err := env.ServiceAccountToken(ctx, ns, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	bindMetricsReader(t, env, ns, "prometheus")
	waitAllowed(t, env, "system:serviceaccount:"+ns+":not-a-reader", false)

	for _, sa := range []string{testenv.ManagerServiceAccount, testenv.AgentServiceAccount} {
		t.Run(sa, func(t *testing.T) {
			cfg, err := env.ServiceAccountConfig(ctx, testenv.OperatorNamespace, sa)
			if err != nil {
				t.Fatal(err)
			}
			addr := freeAddr(t)
			mgr, err := ctrl.NewManager(cfg, ctrl.Options{
				Scheme:                 newScheme(),
				Metrics:                metricsOptions(addr, ""),
				HealthProbeBindAddress: "0",
			})
			if err != nil {
				t.Fatal(err)
			}
			// A controller that needs no API access, so that controller-runtime's
			// reconcile metrics have a series to show.
			events := make(chan event.GenericEvent, 1)
			events <- event.GenericEvent{Object: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tick"}}}
			name := "metrics-probe-" + sa
			if err := ctrl.NewControllerManagedBy(mgr).Named(name).
				WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{})).
				Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })); err != nil {
				t.Fatal(err)
			}
			mctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- mgr.Start(mctx) }()
			t.Cleanup(func() { cancel(); <-done })
			if err := waitTLS(ctx, addr); err != nil {
				t.Fatalf("the metrics endpoint never served TLS: %v", err)
			}
			url := "https://" + addr + "/metrics"

			if code, body := scrape(t, url, ""); code != http.StatusUnauthorized {
				t.Errorf("no token: %d %q, want 401", code, body)
			}
			// controller-runtime's filter answers 500 when the TokenReview says the
			// token is malformed; what matters is that no metrics come back.
			if code, body := scrape(t, url, "not-a-token"); code == http.StatusOK || strings.Contains(body, "controller_runtime") {
				t.Errorf("a token the API server does not know: %d %q, want a refusal", code, body)
			}
			if code, body := scrape(t, url, otherToken); code != http.StatusForbidden {
				t.Errorf("a ServiceAccount without holdfast-metrics-reader: %d %q, want 403", code, body)
			}
			want := `controller_runtime_reconcile_total{controller="` + name + `",result="success"} 1`
			testenv.Eventually(t, "the reader sees the reconcile metrics", func() error {
				code, body := scrape(t, url, readerToken)
				if code != http.StatusOK {
					return fmt.Errorf("status %d: %s", code, body)
				}
				if !strings.Contains(body, want) {
					return fmt.Errorf("the metrics lack %s", want)
				}
				return nil
			})
			// Plain HTTP gets nothing useful.
			if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Error("the metrics are served over plain HTTP")
				}
			}
		})
	}
}

// TestCommandsServeMetricsOnlyOverAuthenticatedHTTPS runs manager and agent as the
// binary does, with their default metrics settings on a free address: the endpoint
// speaks TLS and turns away a client without a token.
func TestCommandsServeMetricsOnlyOverAuthenticatedHTTPS(t *testing.T) {
	env := testenv.Require(t, env)
	for _, tc := range []struct {
		command string
		args    []string
	}{
		{"manager", []string{"--namespace", "default"}},
		{"agent", []string{"--node-name", "node-1", "--kubelet-root", t.TempDir()}},
	} {
		t.Run(tc.command, func(t *testing.T) {
			metrics := freeAddr(t)
			args := append([]string{tc.command, "--kubeconfig", env.Kubeconfig,
				"--health-probe-bind-address", "0", "--metrics-bind-address", metrics}, tc.args...)
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), "HOLDFAST_TEST_RUN_MAIN=1", "TMPDIR="+t.TempDir())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			if err := waitTLS(t.Context(), metrics); err != nil {
				t.Fatalf("holdfast %s: the metrics endpoint never served TLS: %v\noutput:\n%s", tc.command, err, out.String())
			}
			if code, body := scrape(t, "https://"+metrics+"/metrics", ""); code != http.StatusUnauthorized {
				t.Errorf("holdfast %s: no token: %d %q, want 401", tc.command, code, body)
			}
		})
	}
}

// TestManagerServesHoldfastMetrics runs the manager as the binary does and scrapes its
// HTTPS endpoint with a token allowed to read it: Holdfast's own metrics are there
// (the collector is wired into the manager), here the Ready gauge of a storage location.
func TestManagerServesHoldfastMetrics(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := t.Context()
	if err := env.InstallRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t, nil)
	token, err := env.ServiceAccountToken(ctx, ns, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	bindMetricsReader(t, env, ns, "prometheus")
	bsl := &backupv1alpha1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "metrics-" + ns},
		Spec: backupv1alpha1.BackupStorageLocationSpec{Filesystem: &backupv1alpha1.FilesystemLocation{Path: t.TempDir()}}}
	if err := env.Client.Create(ctx, bsl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), bsl) })

	metrics := freeAddr(t)
	cmd := exec.Command(os.Args[0], "manager", "--kubeconfig", env.Kubeconfig, "--namespace", "default",
		"--health-probe-bind-address", "0", "--metrics-bind-address", metrics)
	cmd.Env = append(os.Environ(), "HOLDFAST_TEST_RUN_MAIN=1", "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := waitTLS(ctx, metrics); err != nil {
		t.Fatalf("the metrics endpoint never served TLS: %v\noutput:\n%s", err, out.String())
	}
	want := `holdfast_storage_location_ready{location="` + bsl.Name + `"}`
	testenv.Eventually(t, "the manager's scrape has "+want, func() error {
		code, body := scrape(t, "https://"+metrics+"/metrics", token)
		if code != http.StatusOK {
			return fmt.Errorf("status %d: %s", code, body)
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("not in the scrape")
		}
		return nil
	})
}
