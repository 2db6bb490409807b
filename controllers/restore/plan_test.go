package restore

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
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
