package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policycontroller "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// startControllers runs the manager's storage location, policy and restore
// controllers against the test API server until the test ends.
func startControllers(t *testing.T, e *testenv.Env) {
	t.Helper()
	if err := e.EnsureNamespace(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Each -count run starts a manager with the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Setup(mgr, storage.Options{Namespace: ns, WorkDir: t.TempDir(), ResticPath: filepath.Join(testenv.ToolsBin(), "restic"), ProbeTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	if err := (&policycontroller.VolumeBackupPolicyReconciler{Client: mgr.GetClient(), Engine: engine}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&restore.VolumeRestoreReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
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
}

// The health scripts and kstatus read the status the real controllers write, for a
// working and a broken object of each user kind.
func TestHealthOfControllerOutput(t *testing.T) {
	e := testenv.Require(t, env)
	parent := t
	startControllers(t, e)
	namespace := e.Namespace(t, nil)
	suffix := "-" + namespace

	// policy is a policy of this test's namespace on the location named location;
	// change, if set, adjusts its spec.
	policy := func(name, location string, change func(*v1.VolumeBackupPolicySpec)) *v1.VolumeBackupPolicy {
		p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name + suffix},
			Spec: v1.VolumeBackupPolicySpec{
				StorageLocation: location + suffix,
				Selector:        v1.VolumeSelector{Namespaces: `namespace.metadata.name == "` + namespace + `"`},
			}}
		if change != nil {
			change(&p.Spec)
		}
		return p
	}

	scripts := map[string]string{}
	for _, k := range userKinds {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gitops", "argocd", "backup.holdfast.dev_"+k.kind, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		scripts[k.kind] = string(data)
	}

	for _, tc := range []struct {
		name        string
		obj         client.Object
		wantArgo    string
		wantKstatus status.Status
		wantMessage string
	}{
		{
			name: "filesystem storage location that works",
			obj: &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "fs" + suffix},
				Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: t.TempDir()}}},
			wantArgo: "Healthy", wantKstatus: status.CurrentStatus, wantMessage: "Wrote, read back and deleted",
		},
		{
			name: "S3 storage location without its credentials Secret",
			obj: &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: "s3" + suffix},
				Spec: v1.BackupStorageLocationSpec{S3: &v1.S3Location{
					Bucket: "backups", Endpoint: "127.0.0.1:1", Insecure: true,
					CredentialsSecretRef: v1.SecretReference{Name: "missing" + suffix},
				}}},
			wantArgo: "Degraded", wantKstatus: status.InProgressStatus, wantMessage: "missing" + suffix,
		},
		{
			name:     "policy on the working location",
			obj:      policy("ok", "fs", nil),
			wantArgo: "Healthy", wantKstatus: status.CurrentStatus, wantMessage: "volumes selected",
		},
		{
			name:     "policy on the location that does not work",
			obj:      policy("broken-location", "s3", nil),
			wantArgo: "Degraded", wantKstatus: status.InProgressStatus, wantMessage: "is not Ready: ",
		},
		{
			name:     "suspended policy",
			obj:      policy("suspended", "fs", func(spec *v1.VolumeBackupPolicySpec) { spec.Suspend = true }),
			wantArgo: "Suspended", wantKstatus: status.CurrentStatus, wantMessage: "suspended",
		},
		{
			name: "policy whose selector does not compile",
			obj: policy("bad", "fs", func(spec *v1.VolumeBackupPolicySpec) {
				spec.Selector = v1.VolumeSelector{Volumes: `pod.spec.noSuchField == "x"`}
			}),
			wantArgo: "Degraded", wantKstatus: status.FailedStatus, wantMessage: "noSuchField",
		},
		{
			name: "restore waiting for its pods",
			obj: &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "wait", Namespace: namespace},
				Spec: v1.VolumeRestoreSpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "not-yet"}},
					Source:      &v1.RestoreSource{Latest: true},
				}},
			// Healthy once it knows what new pods wait for, so that an application in a
			// later Argo CD sync wave is applied (the restore waits for its pods).
			wantArgo: "Healthy", wantKstatus: status.InProgressStatus, wantMessage: "pods created now wait for their data",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if err := e.Client.Create(ctx, tc.obj); err != nil {
				t.Fatal(err)
			}
			// Storage locations stay until the end: the policies after them use them.
			cleanup := t.Cleanup
			kind := kindOf(tc.obj)
			if kind == "BackupStorageLocation" {
				cleanup = parent.Cleanup
			}
			cleanup(func() { _ = e.Client.Delete(context.Background(), tc.obj) })
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(v1.GroupVersion.WithKind(kind))

			var gotArgo, msg string
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				if err := e.Client.Get(ctx, client.ObjectKeyFromObject(tc.obj), u); err != nil {
					return false, err
				}
				// Wait until the controller has written a status for this generation.
				conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
				if len(conds) == 0 {
					return false, nil
				}
				gotArgo, msg = argoHealth(t, scripts[kind], u)
				return gotArgo == tc.wantArgo, nil
			})
			if err != nil {
				t.Fatalf("Argo CD health never became %s (last %s %q): %v\n%v", tc.wantArgo, gotArgo, msg, err, u.Object["status"])
			}
			if !strings.Contains(msg, tc.wantMessage) {
				t.Errorf("Argo CD message %q does not contain %q", msg, tc.wantMessage)
			}
			res, err := status.Compute(u)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.wantKstatus {
				t.Errorf("kstatus = %s (%s), want %s", res.Status, res.Message, tc.wantKstatus)
			}
		})
	}
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *v1.BackupStorageLocation:
		return "BackupStorageLocation"
	case *v1.VolumeBackupPolicy:
		return "VolumeBackupPolicy"
	case *v1.VolumeRestore:
		return "VolumeRestore"
	}
	return ""
}
