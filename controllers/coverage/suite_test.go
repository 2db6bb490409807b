package coverage

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

// testInterval stands for DefaultInterval: short, so a test waits seconds for a
// change to show, yet long enough that several changes fold into one computation.
const testInterval = time.Second

func TestMain(m *testing.M) {
	testenv.Run(m, &env, testenv.Options{Setup: startManager})
}

// startManager runs the coverage controller as the real manager does, as the
// manager's ServiceAccount with the roles of config/rbac, so a missing RBAC marker
// fails.
func startManager(env *testenv.Env) (func(), error) {
	var logs io.Writer = io.Discard
	if os.Getenv("HOLDFAST_TEST_LOG") != "" {
		logs = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(logs)))
	cfg, err := env.ManagerConfig(context.Background())
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return nil, err
	}
	if err := Setup(mgr, Options{Interval: testInterval}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() { cancel(); <-done }, nil
}
