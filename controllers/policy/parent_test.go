package policy

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestABackupContinuesOnlyItsOwnNamespacesChain: a namespace created under a name that
// an earlier namespace had (the store still holds that one's snapshots, which the
// repository's status lists) starts a chain of its own: its first backup has no
// parent, so it neither builds on nor learns the ID of another team's snapshot
// (review M14). Its next backup continues its own chain. A namespace an administrator
// lets adopt the earlier one continues that chain instead.
func TestABackupContinuesOnlyItsOwnNamespacesChain(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	const earlier = "00000000-0000-4000-8000-00000000ea71"

	reused := newChainNamespace(t, e, nil, earlier)
	p := newPolicy("chain-"+reused.ns, reused.ns)
	reused.create(p)
	first := runNow(t, e, reused.ns, p.Name, "1")
	if first.Spec.ParentSnapshotID != "" {
		t.Errorf("the first backup in a namespace that adopts nothing continues %q", first.Spec.ParentSnapshotID)
	}
	if first.Spec.Tags[identity.TagNamespaceUID] == "" || first.Spec.Tags[identity.TagNamespaceUID] == earlier {
		t.Errorf("the backup records namespace uid %q", first.Spec.Tags[identity.TagNamespaceUID])
	}
	first.Status.Phase, first.Status.SnapshotID = v1.RunCompleted, "s-own-1"
	first.Status.StartTime = &metav1.Time{Time: time.Now()}
	if err := e.Client.Status().Update(ctx, &first); err != nil {
		t.Fatal(err)
	}
	if second := runNow(t, e, reused.ns, p.Name, "2"); second.Spec.ParentSnapshotID != "s-own-1" {
		t.Errorf("the second backup continues %q, want the namespace's own s-own-1", second.Spec.ParentSnapshotID)
	}

	adopting := newChainNamespace(t, e, map[string]string{v1.AnnotationAdoptBackups: earlier}, earlier)
	p2 := newPolicy("chain-"+adopting.ns, adopting.ns)
	adopting.create(p2)
	if b := runNow(t, e, adopting.ns, p2.Name, "1"); b.Spec.ParentSnapshotID != "s-earlier" {
		t.Errorf("a namespace that adopts the earlier one continues %q, want s-earlier", b.Spec.ParentSnapshotID)
	}
}

// newChainNamespace makes a namespace with a running pod "app" with an emptyDir, and a
// repository whose status says the store holds snapshots of /pod/app/data taken in
// the namespace incarnation earlier.
func newChainNamespace(t *testing.T, e *testenv.Env, annotations map[string]string, earlier string) *workload {
	t.Helper()
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	if annotations != nil {
		ns := &corev1.Namespace{}
		if err := e.Client.Get(ctx, client.ObjectKey{Name: w.ns}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Annotations = annotations
		if err := e.Client.Update(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	w.pod("app", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	repo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: "default-kopia", Namespace: w.ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: "default", Uploader: v1.UploaderKopia}}
	w.create(repo)
	at := metav1.NewTime(time.Now().Add(-time.Hour).UTC().Truncate(time.Second))
	repo.Status.RestorePoints = []v1.SourceRestorePoints{{SourcePath: "/pod/app/data", NamespaceUID: earlier, Snapshots: 3,
		Oldest: at, Latest: at, LatestSnapshotID: "s-earlier"}}
	if err := e.Client.Status().Update(ctx, repo); err != nil {
		t.Fatal(err)
	}
	return w
}

// runNow sets the policy's run-now token and returns the run's one PodVolumeBackup.
func runNow(t *testing.T, e *testenv.Env, ns, policy, token string) v1.PodVolumeBackup {
	t.Helper()
	ctx := t.Context()
	// Run names have a resolution of one second: each run in its own.
	testClock.Step(time.Second)
	p := getPolicy(t, e, ctx, policy)
	patch := client.MergeFrom(p.DeepCopy())
	p.Annotations = map[string]string{v1.AnnotationRunNow: token}
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	var got v1.PodVolumeBackup
	eventually(t, "run "+token+" of "+policy, func() error {
		p = getPolicy(t, e, ctx, policy)
		if p.Status.LastRunNowToken != token || p.Status.LastRun == nil {
			return fmt.Errorf("token %q, last run %+v", p.Status.LastRunNowToken, p.Status.LastRun)
		}
		pvbs := backupsOf(t, e, ctx, ns, client.MatchingLabels{v1.LabelRun: p.Status.LastRun.Name})
		if len(pvbs) != 1 {
			return fmt.Errorf("%d backups in run %s", len(pvbs), p.Status.LastRun.Name)
		}
		got = pvbs[0]
		return nil
	})
	return got
}
