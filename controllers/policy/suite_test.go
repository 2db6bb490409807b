package policy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

var (
	env *testenv.Env
	// testClock drives the schedules of every policy in this package's tests.
	testClock = clocktesting.NewFakeClock(time.Now().UTC().Truncate(time.Second))

	managerMu sync.Mutex
)

func TestMain(m *testing.M) {
	// Install only this package's webhook: the API server would otherwise call the
	// other packages' webhooks, which this test process does not serve.
	dir, err := policyWebhookManifest()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testenv.Run(m, &env, testenv.Options{WebhookPaths: []string{dir}, Cleanup: func() { _ = os.RemoveAll(dir) }})
}

func policyWebhookManifest() (string, error) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml"))
	if err != nil {
		return "", err
	}
	var mine []string
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.Contains(doc, "/validate-backup-holdfast-dev-v1alpha1-volumebackuppolicy") {
			mine = append(mine, doc)
		}
	}
	if len(mine) != 1 {
		return "", fmt.Errorf("config/webhook/manifests.yaml: want one document with the policy webhook, found %d", len(mine))
	}
	dir, err := os.MkdirTemp("", "holdfast-policy-webhook-")
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "manifests.yaml"), []byte(strings.TrimPrefix(mine[0], "---\n")), 0o600)
}

// startManager starts the real controller and webhook for one test and stops them
// when it ends (before the control plane stops, so no watch keeps the API server
// waiting). It returns once the webhook serves.
func startManager(t *testing.T) *testenv.Env {
	t.Helper()
	return startManagerWith(t, Options{})
}

// startManagerWith is startManager with the options main.go gives Setup.
func startManagerWith(t *testing.T, opts Options) *testenv.Env {
	t.Helper()
	return startManagerWrapped(t, opts, nil)
}

// startManagerWrapped is startManagerWith whose manager sends its requests through
// wrap (nil: directly), for tests that watch or hold what the controller sends.
func startManagerWrapped(t *testing.T, opts Options, wrap func(http.RoundTripper) http.RoundTripper) *testenv.Env {
	t.Helper()
	e := testenv.Require(t, env)
	cfg := rest.CopyConfig(e.Config)
	if wrap != nil {
		cfg.Wrap(wrap)
	}
	managerMu.Lock()
	t.Cleanup(managerMu.Unlock) // one manager at a time: they share the webhook port
	logs := io.Discard
	if os.Getenv("HOLDFAST_TEST_LOG") != "" {
		logs = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(logs)))
	wh := e.WebhookInstallOptions()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:        e.Scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		Controller:    config.Controller{SkipNameValidation: new(true)},
		Cache:         CacheOptions(),
		WebhookServer: webhook.NewServer(webhook.Options{Host: wh.LocalServingHost, Port: wh.LocalServingPort, CertDir: wh.LocalServingCertDir}),
	})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	if err := (&VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Cache: mgr.GetCache(), Engine: engine, Clock: testClock,
		HostPathRoots: opts.HostPathRoots, Reader: opts.Reader}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&VolumeBackupPolicyValidator{Engine: engine}).SetupWebhookWithManager(mgr); err != nil {
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
	checker := mgr.GetWebhookServer().StartedChecker()
	eventually(t, "the webhook server to serve", func() error { return checker(nil) })
	setLocationReady(t, e, "default", metav1.ConditionTrue, "Probed", "probed")
	return e
}

// setLocationReady creates the storage location name if needed and sets its Ready
// condition, standing in for the storage controller, which this package does not run.
func setLocationReady(t *testing.T, e *testenv.Env, name string, status metav1.ConditionStatus, reason, msg string) {
	t.Helper()
	ctx := context.Background()
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/backups"}}}
	if err := e.Client.Create(ctx, bsl); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	eventually(t, "storage location "+name+" Ready="+string(status), func() error {
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, bsl); err != nil {
			return err
		}
		apimeta.SetStatusCondition(&bsl.Status.Conditions, metav1.Condition{Type: v1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: bsl.Generation})
		return e.Client.Status().Update(ctx, bsl)
	})
}

// eventually waits on a condition with the shared poller of testenv.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// waitPolicyEvent waits for an event of reason on policy whose message holds every one
// of parts (a policy is cluster-scoped: its events are in namespace default).
func waitPolicyEvent(t *testing.T, e *testenv.Env, ctx context.Context, policy, reason string, parts ...string) {
	t.Helper()
	eventually(t, "a "+reason+" event on policy "+policy+" saying "+strings.Join(parts, " … "), func() error {
		var events corev1.EventList
		if err := e.Client.List(ctx, &events, client.InNamespace(metav1.NamespaceDefault)); err != nil {
			return err
		}
	next:
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name != policy || ev.Reason != reason {
				continue
			}
			for _, part := range parts {
				if !strings.Contains(ev.Message, part) {
					continue next
				}
			}
			return nil
		}
		return fmt.Errorf("no such event yet")
	})
}
