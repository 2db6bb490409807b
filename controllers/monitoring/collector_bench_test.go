package monitoring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// memoryReader answers List from slices, with the one copy a cache read without deep
// copies makes (each object's struct into the list's items); PodVolumeBackups from
// the store a cache keeps them in, in its order.
type memoryReader struct {
	pvbs      []v1.PodVolumeBackup
	store     toolscache.Store
	policies  []v1.VolumeBackupPolicy
	repos     []v1.BackupRepository
	locations []v1.BackupStorageLocation
	restores  []v1.VolumeRestore
	nodes     []corev1.Node
	pods      []corev1.Pod
}

func (r *memoryReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return fmt.Errorf("not used")
}

func (r *memoryReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	switch l := list.(type) {
	case *v1.PodVolumeBackupList:
		objs := r.store.List()
		l.Items = make([]v1.PodVolumeBackup, len(objs))
		for i, o := range objs {
			l.Items[i] = *o.(*v1.PodVolumeBackup)
		}
	case *v1.VolumeBackupPolicyList:
		l.Items = append([]v1.VolumeBackupPolicy(nil), r.policies...)
	case *v1.BackupRepositoryList:
		l.Items = append([]v1.BackupRepository(nil), r.repos...)
	case *v1.BackupStorageLocationList:
		l.Items = append([]v1.BackupStorageLocation(nil), r.locations...)
	case *v1.VolumeRestoreList:
		l.Items = append([]v1.VolumeRestore(nil), r.restores...)
	case *corev1.NodeList:
		l.Items = append([]corev1.Node(nil), r.nodes...)
	case *corev1.PodList:
		l.Items = append([]corev1.Pod(nil), r.pods...)
	default:
		return fmt.Errorf("unexpected %T", list)
	}
	return nil
}

// scale is a cluster for the benchmark: volumes spread over namespaces and policies,
// each with backupsPerVolume PodVolumeBackups (a daily schedule keeping 7 daily, 4
// weekly and 12 monthly backups holds about 23, plus the failed ones kept for 72 h).
type scale struct {
	volumes, backupsPerVolume, namespaces, policies, nodes int
}

func clusterOf(s scale) *memoryReader {
	r := &memoryReader{}
	start := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	now := metav1.Time{Time: start}
	for p := range s.policies {
		r.policies = append(r.policies, v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%d", p)},
			Spec: v1.VolumeBackupPolicySpec{StorageLocation: "s3", Schedule: &v1.Schedule{Cron: "0 1 * * *", TimeZone: "Europe/Paris"}},
			Status: v1.VolumeBackupPolicyStatus{LastRun: &v1.RunSummary{Name: "r", Outcome: v1.RunOutcomeSucceeded, StartTime: &metav1.Time{Time: start},
				VolumesSelected: int32(s.volumes / s.policies), VolumesCompleted: int32(s.volumes / s.policies)},
				Skipped: []v1.SkippedVolumes{{Reason: "HostPath", Count: 3}, {Reason: "Secret", Count: 40}}}})
	}
	for n := range s.namespaces {
		r.repos = append(r.repos, v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", n), Name: "s3-kopia"},
			Spec: v1.BackupRepositorySpec{StorageLocation: "s3", Uploader: v1.UploaderKopia},
			Status: v1.BackupRepositoryStatus{LastMaintenanceTime: &now,
				Maintenance: []v1.MaintenanceResult{{Mode: "Quick", Result: "Succeeded", StartTime: now, CompletionTime: &now}},
				StoreUsage:  &v1.StoreUsage{Bytes: 1 << 40, Objects: 50_000, MeasuredTime: now}}})
	}
	r.locations = []v1.BackupStorageLocation{{ObjectMeta: metav1.ObjectMeta{Name: "s3"}}}
	for n := range s.nodes {
		name := fmt.Sprintf("node-%d", n)
		r.nodes = append(r.nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: "linux"}}})
		r.pods = append(r.pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "holdfast-system", Name: "agent-" + name},
			Spec: corev1.PodSpec{NodeName: name}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}})
	}
	r.pvbs = make([]v1.PodVolumeBackup, 0, s.volumes*s.backupsPerVolume)
	for v := range s.volumes {
		ns, policy := fmt.Sprintf("ns-%d", v%s.namespaces), fmt.Sprintf("policy-%d", v%s.policies)
		claim := fmt.Sprintf("data-%d", v)
		for b := range s.backupsPerVolume {
			at := metav1.NewTime(start.Add(time.Duration(b) * 24 * time.Hour))
			end := metav1.NewTime(at.Add(time.Minute))
			phase := v1.RunCompleted
			if b%10 == 9 {
				phase = v1.RunFailed
			}
			r.pvbs = append(r.pvbs, v1.PodVolumeBackup{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d-%d", policy, b, v), CreationTimestamp: at,
					Labels: map[string]string{v1.LabelPolicy: policy, v1.LabelRun: fmt.Sprintf("%s-%d", policy, b)}},
				Spec: v1.PodVolumeBackupSpec{Node: fmt.Sprintf("node-%d", v%s.nodes), Pod: v1.PodReference{Name: "app-0", UID: "u"},
					Volume: "data", ClaimName: claim, SourcePath: "/pvc/" + claim, StorageLocation: "s3", Repository: "s3-kopia",
					Uploader: v1.UploaderKopia, Tags: map[string]string{identity.TagPolicy: policy}},
				Status: v1.PodVolumeBackupStatus{Phase: phase, StartTime: &at, CompletionTime: &end, SnapshotID: "k0123456789abcdef",
					Progress: v1.Progress{TotalBytes: 1 << 30, BytesDone: 1 << 30, TotalFiles: 10000, FilesDone: 10000}, BytesUploaded: 1 << 20},
			})
		}
	}
	return r
}

// syncedStore stands for a synced informer: its store holds the objects.
type syncedStore struct{ store toolscache.Store }

func (s syncedStore) HasSynced() bool            { return true }
func (s syncedStore) GetStore() toolscache.Store { return s.store }

// BenchmarkCollect is one scrape of a cluster of 10,000 protected volumes with 25
// backups each (250,000 PodVolumeBackups), 50 policies, 500 namespaces and 200 nodes,
// through a registry as controller-runtime's: reading the backups from the
// informer's store, as the manager does, and through a List of the cache.
func BenchmarkCollect(b *testing.B) {
	r := clusterOf(scale{volumes: 10_000, backupsPerVolume: 25, namespaces: 500, policies: 50, nodes: 200})
	// As decoded from a watch, each object on its own.
	store := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for i := range r.pvbs {
		pvb := r.pvbs[i].DeepCopy()
		if err := store.Add(pvb); err != nil {
			b.Fatal(err)
		}
	}
	r.pvbs, r.store = nil, store
	for _, bc := range []struct {
		name   string
		stored bool
	}{{"informer-store", true}, {"cache-list", false}} {
		b.Run(bc.name, func(b *testing.B) {
			c := New(r, Options{Namespace: "holdfast-system"})
			if bc.stored {
				c.backups = &storeBackups{informer: syncedStore{store}}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			var series int
			b.ReportAllocs()
			for b.Loop() {
				fams, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				series = 0
				for _, f := range fams {
					series += len(f.GetMetric())
				}
			}
			b.ReportMetric(float64(series), "series")
		})
	}
}
