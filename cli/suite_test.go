package cli

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/controllers/coverage"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Run(m, &env, testenv.Options{Setup: startManager})
}

// startManager runs the policy, coverage and restore controllers as the manager does
// (as its ServiceAccount, with the roles of config/rbac): run follows a real run,
// coverage reads the VolumeCoverage they keep, restore follows a real VolumeRestore;
// snapshots, ls and get talk to the browse session controller and server
// (browse_test.go).
// No storage controller runs: tests mark the storage location Ready, and play the
// agent by completing PodVolumeBackups and PodVolumeRestores. The restore controller
// reads PodVolumeBackups only (no store catalog), and no pod webhook runs: the
// restore tests restore into running pods (runningPods: Overwrite).
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
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return nil, err
	}
	if err := (&policyctrl.VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := coverage.Setup(mgr, coverage.Options{Interval: time.Second, Engine: engine}); err != nil {
		return nil, err
	}
	if err := (&restore.VolumeRestoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Writer: restore.ClaimPodOptions{Namespace: "holdfast-system", Image: "holdfast:test", StartTimeout: 30 * time.Second}}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	workDir, err := os.MkdirTemp("", "holdfast-cli-browse-")
	if err != nil {
		return nil, err
	}
	if err := startBrowse(env, mgr, workDir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() { cancel(); <-done; browseServer.Close(); _ = os.RemoveAll(workDir) }, nil
}
