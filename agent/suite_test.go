package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/agent"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The agent under test runs as its own process, as on a node: the test binary re-runs
// itself in one of these roles.
const (
	roleEnv   = "HOLDFAST_TEST_ROLE"
	roleAgent = "agent"
)

// testResticLockWait is how long the test agent's restic waits for a lock.
const testResticLockWait = 3 * time.Second

const (
	operatorNamespace = "holdfast-system"
	nodeName          = "node-1"
	bucket            = "holdfast"
)

// fixture is what the whole package shares: one API server, one MinIO, one manager
// (storage controllers) and one agent process.
type fixture struct {
	env         *testenv.Env
	minio       *minio.Server
	kubeletRoot string
	// hostRoot is the agent's one --host-path-roots directory (hostpath_test.go).
	hostRoot string
	work     string
	fsStore  string
	// moverBinary is the holdfast binary the agent runs its data movers with.
	moverBinary string
	// managerURL serves job credentials; managerToken is the agent's token for it.
	managerURL, managerToken string
	// metricsAddr is where the agent process serves its metrics.
	metricsAddr string

	mu    sync.Mutex
	agent *exec.Cmd
	// exited is closed when the agent process has been waited for.
	exited chan struct{}
}

var (
	env *testenv.Env
	fx  = &fixture{}
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case roleAgent:
		os.Exit(runAgentProcess())
	}
	testenv.Run(m, &env, testenv.Options{Setup: fx.setup})
}

// runAgentProcess is the agent, configured from the environment by the test.
func runAgentProcess() int {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("HOLDFAST_TEST_KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testenv.Scheme(),
		// Plain HTTP on loopback, for the tests to scrape (metrics_test.go); the
		// binary serves HTTPS to authorized clients only (main_metrics_test.go).
		Metrics: metricsserver.Options{BindAddress: os.Getenv("HOLDFAST_TEST_METRICS_ADDR")},
		Cache:   agent.CacheOptions(nodeName),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	moverBinary := os.Getenv("HOLDFAST_TEST_MOVER")
	hostRoots, err := hostpath.ParseRoots(os.Getenv("HOLDFAST_TEST_HOST_PATH_ROOTS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = agent.SetupWithManager(mgr, agent.Options{
		NodeName:         nodeName,
		KubeletRoot:      os.Getenv("HOLDFAST_TEST_KUBELET_ROOT"),
		HostPathRoots:    hostRoots,
		Namespace:        operatorNamespace,
		Concurrency:      2,
		WorkDir:          os.Getenv("HOLDFAST_TEST_WORK"),
		CacheDir:         os.Getenv("HOLDFAST_TEST_CACHE"),
		ResticPath:       filepath.Join(testenv.ToolsBin(), "restic"),
		ProgressInterval: 500 * time.Millisecond,
		// A restic backup or restore gives up on a lock held by maintenance after
		// seconds, not half an hour, and is tried again a second later
		// (restic_lock_test.go).
		ResticLockWait: testResticLockWait,
		LockedRetry:    time.Second,
		// A pod held on a claim whose restore runs on another node is looked at
		// again every second, not every minute (restore_served_test.go).
		ServedClaimRecheck: time.Second,
		Manager: agent.ManagerOptions{
			URL:                  os.Getenv("HOLDFAST_TEST_MANAGER_URL"),
			WebhookConfiguration: managerWebhookConfigName,
			TokenFile:            os.Getenv("HOLDFAST_TEST_MANAGER_TOKEN"),
		},
		// The real data mover, as the agent runs it: it confines itself to the job's
		// volume and re-executes inside that jail.
		MoverCommand: func(ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, moverBinary, "agent-mover", "--progress-interval", "200ms")
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func (f *fixture) setup(e *testenv.Env) (func(), error) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	f.env = e
	ctx, cancel := context.WithCancel(context.Background())
	var stops []func()
	stop := func() {
		cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) (func(), error) { stop(); return nil, err }

	dir, err := os.MkdirTemp("", "holdfast-agent-test-")
	if err != nil {
		return fail(err)
	}
	stops = append(stops, func() { _ = os.RemoveAll(dir) })
	f.kubeletRoot, f.work, f.fsStore = filepath.Join(dir, "kubelet"), filepath.Join(dir, "work"), filepath.Join(dir, "store")
	f.hostRoot = filepath.Join(dir, "local-path-provisioner")
	for _, d := range []string{f.kubeletRoot, f.hostRoot, f.work, f.fsStore, filepath.Join(f.work, "agent"), filepath.Join(f.work, "manager")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fail(err)
		}
	}

	if f.moverBinary, err = testenv.BuildHoldfast(dir); err != nil {
		return fail(err)
	}
	if f.metricsAddr, err = freeAddr(); err != nil {
		return fail(err)
	}
	if f.minio, err = minio.New(minio.Options{Buckets: []string{bucket}}); err != nil {
		return fail(err)
	}
	stops = append(stops, func() { _ = f.minio.Close() })

	if err := e.EnsureNamespace(ctx, operatorNamespace); err != nil {
		return fail(err)
	}
	if err := f.createLocations(ctx); err != nil {
		return fail(err)
	}
	// The agent reads no Secret: it asks the manager for each job's key.
	if f.managerToken, err = f.agentToken(ctx); err != nil {
		return fail(err)
	}
	managerURL, stopServing, err := f.serveJobCredentials(ctx)
	if err != nil {
		return fail(err)
	}
	f.managerURL = managerURL
	stops = append(stops, stopServing)

	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{Scheme: e.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return fail(err)
	}
	catalog, err := storage.Setup(mgr, storage.Options{Namespace: operatorNamespace, WorkDir: filepath.Join(f.work, "manager"),
		ResticPath: filepath.Join(testenv.ToolsBin(), "restic")})
	if err != nil {
		return fail(err)
	}
	// The restore controller plans restores from what the store holds when the
	// PodVolumeBackups are gone (catalog_test.go).
	if err := (&restore.VolumeRestoreReconciler{Client: mgr.GetClient(), Catalog: catalog}).SetupWithManager(mgr); err != nil {
		return fail(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stops = append(stops, func() { cancel(); <-done })

	if err := f.startAgent(); err != nil {
		return fail(err)
	}
	stops = append(stops, f.stopAgent)
	return stop, nil
}

// createLocations makes a MinIO and a filesystem storage location.
func (f *fixture) createLocations(ctx context.Context) error {
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "minio-credentials", Namespace: operatorNamespace},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": f.minio.AccessKey, "AWS_SECRET_ACCESS_KEY": f.minio.SecretKey},
	}
	if err := f.env.Client.Create(ctx, creds); err != nil {
		return err
	}
	for _, bsl := range []*v1.BackupStorageLocation{
		{ObjectMeta: metav1.ObjectMeta{Name: "minio"}, Spec: v1.BackupStorageLocationSpec{S3: &v1.S3Location{
			Bucket: bucket, Prefix: "agent-test", Endpoint: f.minio.Endpoint, Region: "us-east-1", ForcePathStyle: true,
			Insecure: true, CredentialsSecretRef: v1.SecretReference{Name: creds.Name}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "fs"}, Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: f.fsStore}}},
	} {
		if err := f.env.Client.Create(ctx, bsl); err != nil {
			return err
		}
	}
	return nil
}

// cacheDir is where the agent keeps the repository caches of backups.
func (f *fixture) cacheDir() string { return filepath.Join(f.work, "agent-cache") }

// startAgent starts the agent process of node-1.
func (f *fixture) startAgent() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"="+roleAgent,
		"HOLDFAST_TEST_KUBECONFIG="+f.env.Kubeconfig,
		"HOLDFAST_TEST_KUBELET_ROOT="+f.kubeletRoot,
		"HOLDFAST_TEST_HOST_PATH_ROOTS="+f.hostRoot,
		"HOLDFAST_TEST_WORK="+filepath.Join(f.work, "agent"),
		"HOLDFAST_TEST_CACHE="+f.cacheDir(),
		"HOLDFAST_TEST_MOVER="+f.moverBinary,
		"HOLDFAST_TEST_MANAGER_URL="+f.managerURL,
		"HOLDFAST_TEST_MANAGER_TOKEN="+f.managerToken,
		"HOLDFAST_TEST_METRICS_ADDR="+f.metricsAddr)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own process group, so killing it also kills a data mover it runs; and it
	// dies with the test binary, also when a timeout ends that without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the agent: %w", err)
	}
	f.agent, f.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(f.exited)
	return nil
}

// killAgent kills the agent and its data movers at once, as a node losing the pod
// would: nothing gets to write a last status.
func (f *fixture) killAgent() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.agent == nil {
		return
	}
	_ = syscall.Kill(-f.agent.Process.Pid, syscall.SIGKILL)
	<-f.exited
	f.agent = nil
}

// stopAgent stops the agent as the kubelet does: SIGTERM, then SIGKILL.
func (f *fixture) stopAgent() {
	f.mu.Lock()
	cmd, exited := f.agent, f.exited
	f.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
	}
	f.killAgent()
}

var errAgentDown = errors.New("the agent process is not running")

func (f *fixture) agentRunning() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.agent == nil {
		return errAgentDown
	}
	return nil
}

// agentMemory reports the agent process's resident memory, for the docs' figures.
func (f *fixture) agentMemory() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.agent == nil {
		return "not running"
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", f.agent.Process.Pid))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(out, ", ")
}
