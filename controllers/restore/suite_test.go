package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// storeCatalog stands for what the store holds, per namespace; a namespace a test did
// not fill holds nothing, as a store without its repositories.
var storeCatalog = &fakeCatalog{points: map[string][]storage.RestorePoint{}}

type fakeCatalog struct {
	mu     sync.Mutex
	points map[string][]storage.RestorePoint
}

func (c *fakeCatalog) set(ns string, points ...storage.RestorePoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.points[ns] = points
}

func (c *fakeCatalog) RestorePoints(_ context.Context, ns, location string) ([]storage.RestorePoint, []string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []storage.RestorePoint
	for _, p := range c.points[ns] {
		if location == "" || p.StorageLocation == location {
			out = append(out, p)
		}
	}
	return out, nil, nil
}

var env *testenv.Env

// operatorNamespace is where the tests put the restore-helper ConfigMap.
const operatorNamespace = "holdfast-system"

// writerStartTimeout is how long the tests' writer pods may take to run: long enough
// for a test to play the kubelet on a loaded machine, short enough to wait out.
const writerStartTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	testenv.Run(m, &env, testenv.Options{
		WebhookPaths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")},
		Setup:        startManager,
	})
}

// startManager runs the restore reconciler and the pod webhook for the whole package,
// as the real manager does, against the test API server, as the manager's
// ServiceAccount with the roles of config/rbac: a permission the code needs and the
// markers do not grant fails these tests (on OwnerReferencesPermissionEnforcement too).
func startManager(env *testenv.Env) (func(), error) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	wh := env.WebhookInstallOptions()
	cfg, err := env.ManagerConfig(context.Background())
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wh.LocalServingHost, Port: wh.LocalServingPort, CertDir: wh.LocalServingCertDir,
		}),
	})
	if err != nil {
		return nil, err
	}
	if err := (&VolumeRestoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Catalog: storeCatalog,
		Writer: ClaimPodOptions{Namespace: operatorNamespace, Image: "holdfast:test", StartTimeout: writerStartTimeout}}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&HeldPodReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	(&PodWebhook{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: operatorNamespace, Image: "holdfast:test"}).SetupWithManager(mgr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if err := env.WaitForWebhook(ctx, wh); err != nil {
		cancel()
		return nil, fmt.Errorf("the webhook server did not come up: %w", err)
	}
	if err := env.EnsureNamespace(ctx, operatorNamespace); err != nil {
		cancel()
		return nil, err
	}
	return func() {
		cancel()
		<-done
	}, nil
}
