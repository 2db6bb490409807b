package install

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// argoHealth runs a health.lua the way Argo CD does: the object, as decoded JSON, in
// the global obj; the script returns a table with status and message.
func argoHealth(t *testing.T, script string, u *unstructured.Unstructured) (string, string) {
	t.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, u.Object))
	if err := L.DoString(script); err != nil {
		t.Fatalf("health.lua: %v", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", v))
	}
}

// statusObject is what the health test needs of each user kind.
type statusObject struct {
	kind   string
	object func(namespace, name string) client.Object
	// status returns pointers to the object's conditions and observedGeneration.
	status func(client.Object) (*[]metav1.Condition, *int64)
	// changeSpec makes a spec change, so that generation moves past the status.
	changeSpec string
}

var userKinds = []statusObject{
	{
		kind: "BackupStorageLocation",
		object: func(_, name string) client.Object {
			return &v1.BackupStorageLocation{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: "/backups"}},
			}
		},
		status: func(o client.Object) (*[]metav1.Condition, *int64) {
			s := &o.(*v1.BackupStorageLocation).Status
			return &s.Conditions, &s.ObservedGeneration
		},
		changeSpec: `{"spec":{"probeInterval":"1m"}}`,
	},
	{
		kind: "VolumeBackupPolicy",
		object: func(_, name string) client.Object {
			return &v1.VolumeBackupPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       v1.VolumeBackupPolicySpec{StorageLocation: "default"},
			}
		},
		status: func(o client.Object) (*[]metav1.Condition, *int64) {
			s := &o.(*v1.VolumeBackupPolicy).Status
			return &s.Conditions, &s.ObservedGeneration
		},
		changeSpec: `{"spec":{"uploader":"restic"}}`,
	},
	{
		kind: "VolumeRestore",
		object: func(namespace, name string) client.Object {
			return &v1.VolumeRestore{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
				Spec: v1.VolumeRestoreSpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
					Source:      &v1.RestoreSource{Latest: true},
				},
			}
		},
		status: func(o client.Object) (*[]metav1.Condition, *int64) {
			s := &o.(*v1.VolumeRestore).Status
			return &s.Conditions, &s.ObservedGeneration
		},
		changeSpec: `{"spec":{"storageLocation":"other"}}`,
	},
}

// The Argo CD health scripts and kstatus (what Flux's health checks use) read the
// same verdict from the status the condition helpers write, stored in and read back
// from the API server, for every kind users write. Each step is what a controller
// does: a step's status is written with the helper, then both readers are asked.
func TestHealthOfUserKinds(t *testing.T) {
	e := testenv.Require(t, env)
	for _, k := range userKinds {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			script, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gitops", "argocd", "backup.holdfast.dev_"+k.kind, "health.lua"))
			if err != nil {
				t.Fatal(err)
			}
			namespace := e.Namespace(t, nil)
			obj := k.object(namespace, "health-"+namespace)
			ctx := t.Context()
			if err := e.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Client.Delete(ctx, obj) })

			// writeStatus applies a helper to the object's current state and stores
			// the status; observe says whether the controller finished the pass.
			writeStatus := func(mark func(*[]metav1.Condition, int64), observe bool) {
				t.Helper()
				if err := e.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
					t.Fatal(err)
				}
				conds, observed := k.status(obj)
				mark(conds, obj.GetGeneration())
				if observe {
					*observed = obj.GetGeneration()
				}
				if err := e.Client.Status().Update(ctx, obj); err != nil {
					t.Fatalf("writing status: %v", err)
				}
			}
			check := func(step, wantArgo string, wantKstatus status.Status, wantMessage string) {
				t.Helper()
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(v1.GroupVersion.WithKind(k.kind))
				if err := e.Client.Get(ctx, client.ObjectKeyFromObject(obj), u); err != nil {
					t.Fatal(err)
				}
				gotArgo, msg := argoHealth(t, string(script), u)
				if gotArgo != wantArgo || !strings.Contains(msg, wantMessage) {
					t.Errorf("%s: Argo CD health = %s %q, want %s containing %q", step, gotArgo, msg, wantArgo, wantMessage)
				}
				res, err := status.Compute(u)
				if err != nil {
					t.Fatalf("%s: kstatus: %v", step, err)
				}
				if res.Status != wantKstatus {
					t.Errorf("%s: kstatus = %s (%s), want %s", step, res.Status, res.Message, wantKstatus)
				}
			}

			// kstatus cannot tell "no controller yet" from "nothing to report" when
			// status is empty: it says Current. Argo CD waits.
			check("created, no status", "Progressing", status.CurrentStatus, "Waiting for the Holdfast controller")

			writeStatus(func(c *[]metav1.Condition, g int64) {
				conditions.MarkReconciling(c, g, conditions.ReasonProgressing, "Probing the store")
			}, false)
			check("reconciling", "Progressing", status.InProgressStatus, "Probing the store")

			writeStatus(func(c *[]metav1.Condition, g int64) {
				conditions.MarkReady(c, g, conditions.ReasonSucceeded, "All good")
			}, true)
			check("ready", "Healthy", status.CurrentStatus, "All good")

			if err := e.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(k.changeSpec))); err != nil {
				t.Fatal(err)
			}
			check("spec changed, not observed yet", "Progressing", status.InProgressStatus, "observe generation 2")

			writeStatus(func(c *[]metav1.Condition, g int64) {
				conditions.MarkNotReady(c, g, "Unreachable", "The store did not answer")
			}, true)
			check("not ready, retrying", "Degraded", status.InProgressStatus, "The store did not answer")

			writeStatus(func(c *[]metav1.Condition, g int64) {
				conditions.MarkStalled(c, g, "InvalidSpec", "The credentials Secret does not exist")
			}, true)
			check("stalled", "Degraded", status.FailedStatus, "The credentials Secret does not exist")

			writeStatus(func(c *[]metav1.Condition, g int64) {
				conditions.MarkReady(c, g, conditions.ReasonSucceeded, "Back")
			}, true)
			check("ready again", "Healthy", status.CurrentStatus, "Back")
		})
	}
}
