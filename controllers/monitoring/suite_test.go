package monitoring

import (
	"context"
	"fmt"
	"os"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var (
	env *testenv.Env
	// collector is the one the suite's manager runs.
	collector *Collector
)

func TestMain(m *testing.M) {
	testenv.Run(m, &env, testenv.Options{Setup: startManager})
}

// startManager runs the collector as main.go does, in a manager that reads the API
// server as the manager's ServiceAccount with the roles of config/rbac: a kind the
// collector reads and the roles do not grant fails the tests.
func startManager(env *testenv.Env) (func(), error) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	cfg, err := env.ManagerConfig(context.Background())
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		return nil, err
	}
	if collector, err = Setup(mgr, Options{Namespace: testenv.OperatorNamespace}); err != nil {
		return nil, fmt.Errorf("setting up the collector: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() { cancel(); <-done }, nil
}
