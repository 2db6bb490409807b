package restore

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Backups of one volume whose times tie to the second (their status has whole seconds)
// are still ordered: a backup of the snapshot that is the other's parent is older.
func TestNewerOrdersBackupsOfTheSameSecond(t *testing.T) {
	second := metav1.NewTime(time.Date(2026, 11, 24, 2, 50, 30, 0, time.UTC))
	later := metav1.NewTime(second.Add(time.Second))
	backup := func(name, snapshot, parent string, start, created metav1.Time) *v1.PodVolumeBackup {
		return &v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created},
			Status:     v1.PodVolumeBackupStatus{StartTime: &start, SnapshotID: snapshot, ParentSnapshotID: parent},
		}
	}
	tests := []struct {
		name string
		a, b *v1.PodVolumeBackup
		want bool
	}{
		{"later start", backup("x", "s2", "", later, second), backup("y", "s1", "", second, later), true},
		{"earlier start", backup("y", "s1", "", second, later), backup("x", "s2", "", later, second), false},
		// The names sort the other way: the parent link decides.
		{"same second, child of the other", backup("run-a", "s2", "s1", second, second), backup("run-b", "s1", "", second, second), true},
		{"same second, parent of the other", backup("run-b", "s1", "", second, second), backup("run-a", "s2", "s1", second, second), false},
		{"same second, unrelated, created later", backup("a", "s2", "", second, later), backup("b", "s1", "", second, second), true},
		{"same second, unrelated, same creation", backup("b", "s2", "", second, second), backup("a", "s1", "", second, second), true},
	}
	for _, tt := range tests {
		if got := newer(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: newer = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The latest backup of a volume is chosen even when the one before it started in the
// same second and is listed first (make test's e2e stories once restored the older).
func TestLatestIsTheNewerOfTwoBackupsOfTheSameSecond(t *testing.T) {
	second := metav1.NewTime(time.Date(2026, 11, 24, 2, 50, 30, 0, time.UTC))
	backup := func(name, snapshot, parent string) v1.PodVolumeBackup {
		return v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: second},
			Spec:       v1.PodVolumeBackupSpec{SourcePath: "/deployment/cache/cache"},
			Status: v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, StartTime: &second,
				SnapshotID: snapshot, ParentSnapshotID: parent},
		}
	}
	backups := []v1.PodVolumeBackup{
		backup("gold-nightly-20261124025029n-cache", "935f", "5107"),
		backup("gold-nightly-20261124025030n-cache", "e551", "935f"),
	}
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}}
	got, why := choose(vr, &v1.RestoreSource{Latest: true}, "/deployment/cache/cache", sources{backups: backups})
	if got == nil {
		t.Fatalf("no backup chosen: %q", why)
	}
	if got.SnapshotID != "e551" {
		t.Errorf("chose snapshot %s, want the newer e551", got.SnapshotID)
	}
}

// With no PodVolumeBackup left, each kind of source resolves from what the store holds,
// for the namespace's own incarnation and the ones it adopts only.
func TestChooseFromTheStoreAlone(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2026, 12, 1, h, 0, 0, 0, time.UTC) }
	const own, earlier, other = "uid-own", "uid-earlier", "uid-other"
	point := func(id string, h int, uid, backup string) storage.RestorePoint {
		return storage.RestorePoint{Snapshot: repository.Snapshot{ID: id, SourcePath: "/pvc/data", StartTime: at(h),
			Tags: map[string]string{identity.TagNamespaceUID: uid, identity.TagBackup: backup}},
			Namespace: "shop", StorageLocation: "default", Uploader: v1.UploaderKopia, Repository: "default-kopia"}
	}
	store := []storage.RestorePoint{
		point("s1", 1, earlier, "nightly-1"), point("s2", 2, own, "nightly-2"), point("s3", 3, own, "nightly-3"),
		point("s9", 9, other, "nightly-9"),
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: own}}
	adopting := ns.DeepCopy()
	adopting.Annotations = map[string]string{v1.AnnotationAdoptBackups: earlier}
	before := func(h int) *metav1.Time { t := metav1.NewTime(at(h)); return &t }
	for _, tc := range []struct {
		name   string
		ns     *corev1.Namespace
		source v1.RestoreSource
		want   string
		why    string
	}{
		{"latest of its own", ns, v1.RestoreSource{Latest: true}, "s3", ""},
		{"before a time", ns, v1.RestoreSource{Before: before(2)}, "s2", ""},
		{"before its own first, another team's is not read", ns, v1.RestoreSource{Before: before(1)}, "", "uid uid-earlier"},
		{"adopted earlier namespace", adopting, v1.RestoreSource{Before: before(1)}, "s1", ""},
		{"named backup, object gone", ns, v1.RestoreSource{PodVolumeBackup: "nightly-2"}, "s2", ""},
		{"named backup of a namespace not adopted", ns, v1.RestoreSource{PodVolumeBackup: "nightly-9"}, "", "does not exist"},
	} {
		vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}}
		got, why := choose(vr, &tc.source, "/pvc/data", sources{store: store, namespace: tc.ns})
		switch {
		case tc.want != "" && (got == nil || got.SnapshotID != tc.want):
			t.Errorf("%s: got %+v (%s), want %s", tc.name, got, why, tc.want)
		case tc.want == "" && got != nil:
			t.Errorf("%s: restored %s, want nothing", tc.name, got.SnapshotID)
		case tc.want == "" && !strings.Contains(why, tc.why):
			t.Errorf("%s: why = %q, want it to say %q", tc.name, why, tc.why)
		case got != nil && (got.BackupName == "" || got.Repository != "default-kopia" || got.Backup != nil):
			t.Errorf("%s: point %+v", tc.name, got)
		}
	}
}
