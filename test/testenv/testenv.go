package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Env is a running test control plane.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client without a cache: reads see the API
	// server's current state.
	Client client.Client
	// Scheme knows the built-in kinds and Holdfast's.
	Scheme *k8sruntime.Scheme
	// Kubeconfig is the path of a kubeconfig file for the built kubectl.
	Kubeconfig string

	env *envtest.Environment
	dir string
	// release ends the thread that started etcd and kube-apiserver (startOnOwnThread).
	release func()
}

// Options change what Start starts.
type Options struct {
	// WebhookPaths are webhook configuration files or directories to install; the
	// test serves the webhooks on Env.WebhookInstallOptions' host, port and certs.
	WebhookPaths []string
	// Setup, if set, runs once after the control plane is up (to start the package's
	// controllers) and returns what stops them; Run calls it before stopping the
	// control plane.
	Setup func(*Env) (stop func(), err error)
	// Cleanup, if set, runs when Run ends, whatever happened (with -short too): for
	// what TestMain made before calling Run, which os.Exit would skip.
	Cleanup func()
}

// RepoRoot is the root of the Holdfast checkout, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ToolsBin is the directory of the binaries built by `make tools`.
func ToolsBin() string {
	if dir := os.Getenv("HOLDFAST_TOOLS_BIN"); dir != "" {
		return dir
	}
	return filepath.Join(RepoRoot(), "bin", "tools")
}

// Scheme returns a scheme with the built-in kinds and Holdfast's.
func Scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(backupv1alpha1.AddToScheme(s))
	return s
}

// Start starts etcd and kube-apiserver, installs the CRDs from config/crd/bases and
// waits until they are served. It fails with a pointer to `make tools` when the
// binaries are missing, rather than skipping: a test that cannot run is not a pass.
func Start(opts Options) (*Env, error) {
	bin := ToolsBin()
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("%s is missing from %s: run `make tools` (or `make test`, which builds them)", name, bin)
		}
	}
	dir, err := os.MkdirTemp("", "holdfast-testenv-")
	if err != nil {
		return nil, err
	}
	guarded, err := guardBinaries(filepath.Join(dir, "bin"), bin)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	scheme := Scheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		// A loaded 2-core machine can take a while to start etcd and the API server.
		ControlPlaneStartTimeout: 3 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	// As on OpenShift: an ownerReference with blockOwnerDeletion may only be set by who
	// may update the owner's finalizers. Admin clients pass every check; a controller
	// run as its ServiceAccount (ManagerConfig) is held to the roles in config/rbac.
	env.ControlPlane.GetAPIServer().Configure().Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	// Paths set here win over KUBEBUILDER_ASSETS (which the Makefile exports, and which
	// envtest prefers to BinaryAssetsDirectory): the guarded ones must be used.
	env.ControlPlane.GetAPIServer().Path = filepath.Join(guarded, "kube-apiserver")
	env.ControlPlane.Etcd = &envtest.Etcd{Path: filepath.Join(guarded, "etcd")}
	env.ControlPlane.KubectlPath = filepath.Join(bin, "kubectl")
	if len(opts.WebhookPaths) > 0 {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            opts.WebhookPaths,
			LocalServingHost: "127.0.0.1",
		}
	}
	cfg, release, err := startOnOwnThread(env)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting the test control plane: %w", err)
	}
	e := &Env{Config: cfg, Scheme: scheme, env: env, dir: dir, release: release}
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if err := e.writeKubeconfig(); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// The operator namespace and the ServiceAccounts of config/rbac.
const (
	OperatorNamespace     = "holdfast-system"
	ManagerServiceAccount = "holdfast-manager"
	AgentServiceAccount   = "holdfast-agent"
)

// InstallRBAC applies config/rbac as an install does: the ServiceAccounts of manager
// and agent, the roles generated from the +kubebuilder:rbac markers, the hand-written
// roles and every binding. It is idempotent.
func (e *Env) InstallRBAC(ctx context.Context) error {
	if err := e.EnsureNamespace(ctx, OperatorNamespace); err != nil {
		return err
	}
	if _, err := e.Kubectl(ctx, "apply", "--server-side", "--field-manager=holdfast-test", "-k", filepath.Join(RepoRoot(), "config", "rbac")); err != nil {
		return fmt.Errorf("applying config/rbac: %w", err)
	}
	return nil
}

// ManagerConfig installs config/rbac and returns a config that reaches the API server
// as the manager's ServiceAccount, with a token of its own: a controller started with
// it has exactly the permissions an install gives the manager, no more, so a missing
// RBAC marker fails the test that needs it.
func (e *Env) ManagerConfig(ctx context.Context) (*rest.Config, error) {
	if err := e.InstallRBAC(ctx); err != nil {
		return nil, err
	}
	return e.ServiceAccountConfig(ctx, OperatorNamespace, ManagerServiceAccount)
}

// ServiceAccountConfig returns a config that authenticates with a token of the
// ServiceAccount (created if missing), as a pod running as it would.
func (e *Env) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	token, err := e.ServiceAccountToken(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	cfg := rest.AnonymousClientConfig(e.Config)
	cfg.BearerToken = token
	return cfg, nil
}

// ServiceAccountToken creates the ServiceAccount unless it exists and returns a token
// for it from the TokenRequest API, valid for two hours (longer than any test run).
func (e *Env) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := e.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating ServiceAccount %s/%s: %w", namespace, name, err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(2 * 60 * 60))}}
	if err := e.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("requesting a token of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// WebhookInstallOptions tells where the API server expects the webhooks to be served.
func (e *Env) WebhookInstallOptions() *envtest.WebhookInstallOptions {
	return &e.env.WebhookInstallOptions
}

func (e *Env) writeKubeconfig() error {
	user, err := e.env.AddUser(envtest.User{Name: "holdfast-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the kubectl user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubectl kubeconfig: %w", err)
	}
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	return os.WriteFile(e.Kubeconfig, kc, 0o600)
}

// Stop stops the control plane and removes its files.
func (e *Env) Stop() error {
	err := e.env.Stop()
	e.release()
	if rmErr := os.RemoveAll(e.dir); err == nil {
		err = rmErr
	}
	return err
}

// Run starts the control plane for a package's tests, runs them and stops it, also
// when a test fails. Use it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Run(m, &env, testenv.Options{}) }
//
// With -short the control plane is not started and integration tests skip themselves
// through Env.Require (by seeing a nil *Env).
func Run(m *testing.M, out **Env, opts Options) {
	os.Exit(run(m, out, opts))
}

func run(m *testing.M, out **Env, opts Options) int {
	if opts.Cleanup != nil {
		defer opts.Cleanup()
	}
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	env, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*out = env
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
		}
	}()
	if opts.Setup != nil {
		stop, err := opts.Setup(env)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv: setup:", err)
			return 1
		}
		defer stop()
	}
	return m.Run()
}

// Require skips the test under -short (no control plane) and returns the env otherwise.
func Require(t testing.TB, env *Env) *Env {
	t.Helper()
	if env == nil {
		if testing.Short() {
			t.Skip("integration test: needs the test control plane (not with -short)")
		}
		t.Fatal("the test control plane is not running")
	}
	return env
}

// Namespace creates a namespace of its own for the test, labelled with the test's
// name, and deletes it when the test ends.
func (e *Env) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(base) > 40 {
		base = base[:40]
	}
	base = strings.Trim(base, "-")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: base + "-", Labels: labels}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating the test namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting test namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// Kubectl runs the kubectl built by `make tools` against the test API server and
// returns its standard output; a non-zero exit is an error carrying standard error.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(ToolsBin(), "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(e.dir, "kubectl-cache"))
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// WaitForWebhook waits until the test's webhook server accepts TLS connections.
func (e *Env) WaitForWebhook(ctx context.Context, opts *envtest.WebhookInstallOptions) error {
	addr := net.JoinHostPort(opts.LocalServingHost, strconv.Itoa(opts.LocalServingPort))
	return Poll(ctx, 2*time.Minute, func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reachability
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// EnsureNamespace creates a namespace with a fixed name (such as the operator
// namespace) unless it exists.
func (e *Env) EnsureNamespace(ctx context.Context, name string) error {
	err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Poll calls cond every 100 ms until it returns nil, ctx ends or timeout passes, and
// returns cond's last error then. It is how tests wait on a condition: never a bare
// sleep, and generous enough for a loaded 2-core machine.
func Poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still after %s)", err, timeout)
		case <-tick.C:
		}
	}
}

// Eventually fails the test unless cond returns nil within 90 seconds.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	if err := Poll(context.Background(), 90*time.Second, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
