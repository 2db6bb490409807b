package hooks

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var (
	env *testenv.Env
	// execs is the executor the hook controller of this package's tests runs with.
	execs = &recordingExecutor{calls: map[string][]execCall{}}
)

func TestMain(m *testing.M) {
	testenv.Run(m, &env, testenv.Options{Setup: startManager})
}

// startManager runs the hook controller as the real manager does, as the manager's
// ServiceAccount with the roles of config/rbac, so a missing RBAC marker fails. The
// kubelet, which serves exec, is absent in envtest: the controller gets the
// recording executor, and the real exec is proven in test/e2e (hooks_test.go).
func startManager(env *testenv.Env) (func(), error) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	cfg, err := env.ManagerConfig(context.Background())
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return nil, err
	}
	if err := (&HookReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Executor: execs,
		Recorder: mgr.GetEventRecorder("holdfast-hooks")}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() { cancel(); <-done }, nil
}

// execCall is one command the controller ran.
type execCall struct {
	pod, container string
	command        []string
}

// recordingExecutor records the commands run, per namespace, and plays them: a
// command ["fail", "<code>", "<stderr>"] exits with that code and output, ["hang"]
// runs until its timeout, anything else exits 0 with the command as its output.
type recordingExecutor struct {
	mu    sync.Mutex
	calls map[string][]execCall
}

func (e *recordingExecutor) Exec(ctx context.Context, namespace, pod, container string, command []string) (ExecResult, error) {
	e.mu.Lock()
	e.calls[namespace] = append(e.calls[namespace], execCall{pod: pod, container: container, command: command})
	e.mu.Unlock()
	switch {
	case command[0] == "fail":
		code, _ := strconv.Atoi(command[1])
		return ExecResult{ExitCode: code, Stderr: command[2]}, nil
	case command[0] == "hang":
		<-ctx.Done()
		return ExecResult{}, ctx.Err()
	}
	return ExecResult{Stdout: strings.Join(command, " ")}, nil
}

// commands are the commands run in the namespace, in order, each joined by spaces and
// prefixed by its container.
func (e *recordingExecutor) commands(namespace string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, c := range e.calls[namespace] {
		out = append(out, c.container+": "+strings.Join(c.command, " "))
	}
	return out
}
