package storage

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// retentionFixture is a Ready kopia repository in a namespace of its own.
type retentionFixture struct {
	t     *testing.T
	ns    string
	bsl   *v1.BackupStorageLocation
	brepo *v1.BackupRepository
	key   string
}

func newRetentionFixture(t *testing.T) *retentionFixture {
	bsl := location(t, uniqueName(t, "bsl"), plainS3, nil)
	waitLocation(t, bsl.Name, metav1.ConditionTrue)
	ns := env.Namespace(t, nil)
	b := waitRepository(t, newRepository(t, ns, bsl.Name, v1.UploaderKopia, time.Hour), "Ready", isReady)
	return &retentionFixture{t: t, ns: ns, bsl: bsl, brepo: b, key: keyOf(t, b)}
}

// backups takes n snapshots of sourcePath through internal/repository (as the agent
// will) and records each in a Completed PodVolumeBackup of policy, an hour apart.
func (f *retentionFixture) backups(policy, sourcePath string, n int) []v1.PodVolumeBackup {
	start := time.Now().Add(-time.Duration(n) * time.Hour).Truncate(time.Second)
	var out []v1.PodVolumeBackup
	for i := range n {
		out = append(out, f.backup(policy, sourcePath, fmt.Sprintf("%s-%d", policy, i), func(st *v1.PodVolumeBackupStatus) {
			st.StartTime = &metav1.Time{Time: start.Add(time.Duration(i) * time.Hour)}
		}))
	}
	return out
}

// backup takes one snapshot of sourcePath and records it in a Completed
// PodVolumeBackup name of policy, whose status adjust can change.
func (f *retentionFixture) backup(policy, sourcePath, name string, adjust func(*v1.PodVolumeBackupStatus)) v1.PodVolumeBackup {
	t := f.t
	t.Helper()
	rep, err := openAsClient(t, f.bsl, f.brepo, f.key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rep.Backup(ctxFor(t), repository.BackupRequest{Dir: sourceDir(t, map[string]string{"n": name}), SourcePath: sourcePath})
	if err != nil {
		t.Fatal(err)
	}
	p := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: map[string]string{v1.LabelPolicy: policy}},
		Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-1"}, Volume: "data",
			SourcePath: sourcePath, StorageLocation: f.bsl.Name, Repository: f.brepo.Name, Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	p.Status = v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: res.SnapshotID}
	if adjust != nil {
		adjust(&p.Status)
	}
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	return *p
}

// snapshotIDs lists the snapshots of sourcePath as the store holds them now, through
// a fresh client (no cached manifests).
func (f *retentionFixture) snapshotIDs(sourcePath string) []string {
	rep, err := openAsClient(f.t, f.bsl, f.brepo, f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rep.Close(ctxFor(f.t))
	snaps, err := rep.Snapshots(ctxFor(f.t), sourcePath)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := []string{}
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	return ids
}

func (f *retentionFixture) remaining(policy string) []string {
	var list v1.PodVolumeBackupList
	if err := env.Client.List(ctxFor(f.t), &list, client.InNamespace(f.ns), client.MatchingLabels{v1.LabelPolicy: policy}); err != nil {
		f.t.Fatal(err)
	}
	names := []string{}
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

func ids(pvbs ...v1.PodVolumeBackup) []string {
	out := []string{}
	for _, p := range pvbs {
		out = append(out, p.Status.SnapshotID)
	}
	sort.Strings(out)
	return out
}

func newPolicy(t *testing.T, name, bsl string, r *v1.Retention, deletion v1.DeletionPolicy) *v1.VolumeBackupPolicy {
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.VolumeBackupPolicySpec{StorageLocation: bsl, Retention: r, DeletionPolicy: deletion}}
	create(t, p)
	return p
}

// TestRetentionExpiresExactlyTheExpectedSnapshots: keepLast 2 over four backups of one
// source deletes the two oldest PodVolumeBackups and exactly their snapshots from
// MinIO; another source's backups are untouched.
func TestRetentionExpiresExactlyTheExpectedSnapshots(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	pvbs := f.backups(policy, "/pvc/orders", 4)
	other := f.backups("unrelated", "/pvc/other", 2)
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 2, MaxExpirePercent: 50}, v1.DeletionRetain)

	eventually(t, 2*time.Minute, "the two oldest backups to expire", func() error {
		if got, want := f.remaining(policy), []string{pvbs[2].Name, pvbs[3].Name}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("remaining = %v, want %v", got, want)
		}
		return nil
	})
	if got, want := f.snapshotIDs("/pvc/orders"), ids(pvbs[2], pvbs[3]); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshots in the store = %v, want %v", got, want)
	}
	if got, want := f.snapshotIDs("/pvc/other"), ids(other...); !reflect.DeepEqual(got, want) {
		t.Fatalf("another source's snapshots = %v, want %v", got, want)
	}
}

// TestRetentionGuardRefuses: a change that would expire more than maxExpirePercent of a
// source's backups in one pass expires nothing and says so in an event on the newest
// backup.
func TestRetentionGuardRefuses(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	pvbs := f.backups(policy, "/pvc/orders", 4)
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 1, MaxExpirePercent: 50}, v1.DeletionRetain)

	// A pass that ran before the controller's cache held all four backups refuses too
	// (2 of 3 is also more than half) and says so; the pass on all four must follow.
	eventually(t, 2*time.Minute, "a RetentionRefused event on all four backups", func() error {
		var events corev1.EventList
		if err := env.Client.List(ctxFor(t), &events, client.InNamespace(f.ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range events.Items {
			if e.Reason == ReasonRetentionRefused && e.InvolvedObject.Name == pvbs[3].Name {
				if strings.Contains(e.Message, "refused to expire 3 of the 4 backups of /pvc/orders") {
					return nil
				}
				seen = append(seen, e.Message)
			}
		}
		return fmt.Errorf("no such event yet; seen %q", seen)
	})
	if got := f.remaining(policy); len(got) != 4 {
		t.Fatalf("remaining = %v, want all four", got)
	}
	if got := f.snapshotIDs("/pvc/orders"); len(got) != 4 {
		t.Fatalf("snapshots = %v, want all four", got)
	}
}

// TestDeletingAPolicy: deleting a policy keeps its backups, unless it says
// deletionPolicy: Delete, in which case its PodVolumeBackups and snapshots go first.
func TestDeletingAPolicy(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	keep, drop := uniqueName(t, "retain"), uniqueName(t, "delete")
	kept := f.backups(keep, "/pvc/kept", 2)
	f.backups(drop, "/pvc/dropped", 2)
	pKeep := newPolicy(t, keep, f.bsl.Name, nil, v1.DeletionRetain)
	pDrop := newPolicy(t, drop, f.bsl.Name, nil, v1.DeletionDelete)
	eventually(t, time.Minute, "the delete-backups finalizer", func() error {
		got := &v1.VolumeBackupPolicy{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pDrop), got); err != nil {
			return err
		}
		if len(got.Finalizers) == 0 {
			return fmt.Errorf("no finalizer yet")
		}
		return nil
	})
	for _, p := range []*v1.VolumeBackupPolicy{pKeep, pDrop} {
		if err := env.Client.Delete(ctxFor(t), p); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Minute, "both policies gone", func() error {
		for _, p := range []*v1.VolumeBackupPolicy{pKeep, pDrop} {
			if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(p), &v1.VolumeBackupPolicy{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("policy %s still there (%v)", p.Name, err)
			}
		}
		return nil
	})
	if got := f.remaining(drop); len(got) != 0 {
		t.Errorf("backups of the Delete policy remain: %v", got)
	}
	if got := f.snapshotIDs("/pvc/dropped"); len(got) != 0 {
		t.Errorf("snapshots of the Delete policy remain: %v", got)
	}
	if got := f.remaining(keep); len(got) != 2 {
		t.Errorf("backups of the Retain policy = %v, want both", got)
	}
	if got, want := f.snapshotIDs("/pvc/kept"), ids(kept...); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshots of the Retain policy = %v, want %v", got, want)
	}
}

// TestRetentionExpiresSnapshotsWhosePodVolumeBackupIsGone: after a namespace is
// created again and adopts its earlier backups (or after a new cluster), the snapshots
// the store holds have no PodVolumeBackup. Retention counts them with the source's
// new backups and expires the oldest in turn, so they do not stay forever; a snapshot
// of an earlier namespace that this one does not adopt is another team's and is kept.
func TestRetentionExpiresSnapshotsWhosePodVolumeBackupIsGone(t *testing.T) {
	testenv.Require(t, env)
	f := newRetentionFixture(t)
	policy := uniqueName(t, "vbp")
	ns := &corev1.Namespace{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: f.ns}, ns); err != nil {
		t.Fatal(err)
	}
	rep, err := openAsClient(t, f.bsl, f.brepo, f.key)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(ctxFor(t))
	take := func(i int, uid string) repository.BackupResult {
		t.Helper()
		res, err := rep.Backup(ctxFor(t), repository.BackupRequest{Dir: sourceDir(t, map[string]string{"n": fmt.Sprint(i)}),
			SourcePath: "/pvc/orders", Tags: map[string]string{identity.TagPolicy: policy, identity.TagNamespaceUID: uid}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	foreign := take(0, "00000000-0000-4000-8000-00000000f0e1")
	var orphans []string
	for i := 1; i <= 3; i++ {
		orphans = append(orphans, take(i, string(ns.UID)).SnapshotID)
	}
	newest := take(4, string(ns.UID))
	snaps, err := rep.Snapshots(ctxFor(t), "/pvc/orders")
	if err != nil {
		t.Fatal(err)
	}
	p := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: policy + "-new", Labels: map[string]string{v1.LabelPolicy: policy}},
		Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: "uid-1"}, Volume: "data",
			SourcePath: "/pvc/orders", StorageLocation: f.bsl.Name, Repository: f.brepo.Name, Uploader: v1.UploaderKopia},
	}
	create(t, p)
	// A later run's backup: status times have whole seconds, and the snapshots above
	// were all taken within one.
	p.Status = v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: newest.SnapshotID,
		StartTime: &metav1.Time{Time: snaps[len(snaps)-1].StartTime.Add(time.Minute)}}
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	newPolicy(t, policy, f.bsl.Name, &v1.Retention{KeepLast: 2, MaxExpirePercent: 50}, v1.DeletionRetain)

	want := []string{foreign.SnapshotID, orphans[2], newest.SnapshotID}
	sort.Strings(want)
	eventually(t, 2*time.Minute, "the two oldest orphans to expire", func() error {
		if got := f.snapshotIDs("/pvc/orders"); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("snapshots = %v, want %v (the newest orphan, the backup, the other team's)", got, want)
		}
		return nil
	})
	if got := f.remaining(policy); !reflect.DeepEqual(got, []string{p.Name}) {
		t.Errorf("PodVolumeBackups = %v, want the new one kept", got)
	}
}
