package storage

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

const operatorNamespace = "holdfast-system"

// The suite: one control plane, two MinIOs (plain HTTP and TLS with its own CA) and
// the storage controllers running in a manager, shared by every test; each test uses
// its own namespaces, storage locations and Secrets.
var (
	env      *testenv.Env
	plainS3  *minio.Server
	secureS3 *minio.Server
)

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	var err error
	if env, err = testenv.Start(testenv.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	defer env.Stop()
	if plainS3, err = minio.New(minio.Options{Buckets: []string{"backups"}}); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	defer plainS3.Close()
	if secureS3, err = minio.New(minio.Options{TLS: true, Buckets: []string{"backups"}}); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	defer secureS3.Close()
	workDir, err := os.MkdirTemp("", "holdfast-storage-suite-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	defer os.RemoveAll(workDir)

	ctx, cancel := context.WithCancel(context.Background())
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		cancel()
		return 1
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err == nil {
		_, err = Setup(mgr, Options{Namespace: operatorNamespace, WorkDir: workDir, ResticPath: filepath.Join(testenv.ToolsBin(), "restic"),
			MaxConcurrentMaintenance: 2, ProbeTimeout: 20 * time.Second, SnapshotDeleteTimeout: 20 * time.Second})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		cancel()
		return 1
	}
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-stopped; err != nil {
		fmt.Fprintln(os.Stderr, "suite: manager:", err)
		code = 1
	}
	return code
}

func zapLevel() zapcore.Level {
	if os.Getenv("HOLDFAST_TEST_LOG") != "" {
		return -1
	}
	return 2 // errors only: the tests assert on status and events
}

// eventually waits up to timeout on a condition with the shared poller of testenv;
// controllers work asynchronously, so tests wait on state.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := testenv.Poll(context.Background(), timeout, check); err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// uniqueName is a DNS-1123 name for cluster-scoped and operator-namespace objects.
func uniqueName(t *testing.T, suffix string) string {
	n := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(n) > 40 {
		n = n[:40]
	}
	return strings.Trim(n, "-") + "-" + suffix
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	ctx := ctxFor(t)
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
}

// credentials creates a credentials Secret in the operator namespace.
func credentials(t *testing.T, name, id, secret string) {
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: operatorNamespace},
		Data: map[string][]byte{repository.SecretAccessKeyID: []byte(id), repository.SecretSecretAccessKey: []byte(secret)}})
}

// location creates a storage location on s (optionally adjusted) with a fresh prefix.
func location(t *testing.T, name string, s *minio.Server, adjust func(*v1.S3Location)) *v1.BackupStorageLocation {
	t.Helper()
	creds := name + "-creds"
	credentials(t, creds, s.AccessKey, s.SecretKey)
	loc := &v1.S3Location{Bucket: "backups", Prefix: name, Endpoint: s.Endpoint, ForcePathStyle: true,
		CredentialsSecretRef: v1.SecretReference{Name: creds}}
	if s.CA != nil {
		loc.CABundle = s.CA.CertPEM
	} else {
		loc.Insecure = true
	}
	if adjust != nil {
		adjust(loc)
	}
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.BackupStorageLocationSpec{S3: loc}}
	create(t, bsl)
	return bsl
}

func readyCondition(conds []metav1.Condition) *metav1.Condition {
	return meta.FindStatusCondition(conds, v1.ConditionReady)
}

// waitLocation waits until the location's Ready condition has status want and returns it.
func waitLocation(t *testing.T, name string, want metav1.ConditionStatus) *v1.BackupStorageLocation {
	t.Helper()
	bsl := &v1.BackupStorageLocation{}
	eventually(t, 2*time.Minute, "storage location "+name+" Ready="+string(want), func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: name}, bsl); err != nil {
			return err
		}
		c := readyCondition(bsl.Status.Conditions)
		if c == nil || c.Status != want {
			return fmt.Errorf("ready = %+v", c)
		}
		return nil
	})
	return bsl
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
