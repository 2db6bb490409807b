package storage

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// TestPlanRetentionKeepsBesidesItsRules: the table of what PlanRetention keeps on top
// of the rules (restore pins, the last backup with good data) and how it orders.
func TestPlanRetentionKeepsBesidesItsRules(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	policy := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "gold"},
		Spec: v1.VolumeBackupPolicySpec{Retention: &v1.Retention{KeepLast: 1, MaxExpirePercent: 100}}}
	type b struct {
		name    string
		hour    int // creation, hours after t0
		start   int // status.startTime, hours after t0 (the agent's clock)
		files   int64
		dropped bool
	}
	pvbs := func(bs ...b) []v1.PodVolumeBackup {
		var out []v1.PodVolumeBackup
		for _, x := range bs {
			p := v1.PodVolumeBackup{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: x.name, Labels: map[string]string{v1.LabelPolicy: "gold"},
					CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(x.hour) * time.Hour))},
				Spec: v1.PodVolumeBackupSpec{Repository: "r", SourcePath: "/pvc/orders"},
				Status: v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: "snap-" + x.name,
					StartTime: &metav1.Time{Time: t0.Add(time.Duration(x.start) * time.Hour)}, Progress: v1.Progress{TotalFiles: x.files}},
			}
			if x.dropped {
				p.Status.Conditions = []metav1.Condition{{Type: v1.ConditionFilesDropped, Status: metav1.ConditionTrue, Reason: v1.ReasonNoFiles}}
			}
			out = append(out, p)
		}
		return out
	}
	pinned := func(ns, snap string) []v1.PodVolumeRestore {
		return []v1.PodVolumeRestore{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop-restore", Name: "pvr-1"},
			Spec: v1.PodVolumeRestoreSpec{SourceNamespace: ns, SnapshotID: snap}}}
	}
	ended := func(pvrs []v1.PodVolumeRestore, phase v1.RunPhase) []v1.PodVolumeRestore {
		pvrs[0].Status.Phase = phase
		return pvrs
	}
	for _, tc := range []struct {
		name       string
		pvbs       []v1.PodVolumeBackup
		orphans    []OrphanSnapshot
		pvrs       []v1.PodVolumeRestore
		wantExpire []string
		wantOrphan []string
		wantPinned []string
		wantGood   string
	}{
		{name: "keepLast 1 expires the older", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			wantExpire: []string{"b1"}},
		{name: "a pending restore pins b1", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			pvrs: pinned("shop", "snap-b1"), wantPinned: []string{"b1"}},
		{name: "an in-progress restore pins b1", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			pvrs: ended(pinned("shop", "snap-b1"), v1.RunInProgress), wantPinned: []string{"b1"}},
		{name: "a completed restore pins nothing", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			pvrs: ended(pinned("shop", "snap-b1"), v1.RunCompleted), wantExpire: []string{"b1"}},
		{name: "a failed restore pins nothing", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			pvrs: ended(pinned("shop", "snap-b1"), v1.RunFailed), wantExpire: []string{"b1"}},
		{name: "a restore of another namespace's snapshot of that ID pins nothing here", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, files: 5}),
			pvrs: pinned("other", "snap-b1"), wantExpire: []string{"b1"}},
		{name: "a restore pins an orphan snapshot", pvbs: pvbs(b{name: "b2", hour: 1, files: 5}),
			orphans: []OrphanSnapshot{{Namespace: "shop", Repository: "r", SourcePath: "/pvc/orders", ID: "old", Time: t0}},
			pvrs:    pinned("shop", "old"), wantPinned: []string{"snapshot:old"}},
		{name: "the agent's clock does not order", pvbs: pvbs(b{name: "b1", hour: 0, start: 48, files: 5}, b{name: "b2", hour: 1, start: 1, files: 5}),
			wantExpire: []string{"b1"}},
		{name: "the last backup with files is kept", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, dropped: true}, b{name: "b3", hour: 2}),
			wantExpire: []string{"b2"}, wantGood: "b1"},
		{name: "a flagged backup with few files is not the good one", pvbs: pvbs(b{name: "b1", hour: 0, files: 5000}, b{name: "b2", hour: 1, files: 3, dropped: true}),
			wantGood: "b1"},
		{name: "once files are back the old one expires", pvbs: pvbs(b{name: "b1", hour: 0, files: 5}, b{name: "b2", hour: 1, dropped: true}, b{name: "b3", hour: 2, files: 5}),
			wantExpire: []string{"b1", "b2"}},
		{name: "an orphan of the same second is older than a recorded backup",
			pvbs:       pvbs(b{name: "b2", hour: 0, files: 5}),
			orphans:    []OrphanSnapshot{{Namespace: "shop", Repository: "r", SourcePath: "/pvc/orders", ID: "o", Time: t0.Add(500 * time.Millisecond)}},
			wantOrphan: []string{"o"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups := PlanRetention(policy, tc.pvbs, tc.orphans, PinsOf(tc.pvrs))
			if len(groups) != 1 {
				t.Fatalf("groups = %+v", groups)
			}
			g := groups[0]
			var pins []string
			for _, p := range g.Pinned {
				pins = append(pins, p.Name)
			}
			if !reflect.DeepEqual(g.Expire, tc.wantExpire) || !reflect.DeepEqual(g.ExpireSnapshots, tc.wantOrphan) ||
				!reflect.DeepEqual(pins, tc.wantPinned) || g.KeptLastGood != tc.wantGood || g.Refused {
				t.Errorf("expire %v, orphans %v, pinned %v, last good %q, refused %v; want %v, %v, %v, %q",
					g.Expire, g.ExpireSnapshots, pins, g.KeptLastGood, g.Refused, tc.wantExpire, tc.wantOrphan, tc.wantPinned, tc.wantGood)
			}
		})
	}
}

func TestFileCountCheck(t *testing.T) {
	backup := func(name string, files int64) *v1.PodVolumeBackup {
		return &v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.PodVolumeBackupSpec{SourcePath: "/pvc/orders"},
			Status: v1.PodVolumeBackupStatus{Progress: v1.Progress{TotalFiles: files}}}
	}
	for _, tc := range []struct {
		name       string
		cur, ref   *v1.PodVolumeBackup
		wantStatus metav1.ConditionStatus
		wantReason string
	}{
		{"first backup", backup("b1", 0), nil, metav1.ConditionFalse, v1.ReasonFileCountPlausible},
		{"no files after some", backup("b2", 0), backup("b1", 1), metav1.ConditionTrue, v1.ReasonNoFiles},
		{"under 1% of many", backup("b2", 9), backup("b1", 1000), metav1.ConditionTrue, v1.ReasonFewFiles},
		{"1% of many", backup("b2", 10), backup("b1", 1000), metav1.ConditionFalse, v1.ReasonFileCountPlausible},
		{"few of few", backup("b2", 1), backup("b1", 999), metav1.ConditionFalse, v1.ReasonFileCountPlausible},
		{"growth", backup("b2", 5000), backup("b1", 1000), metav1.ConditionFalse, v1.ReasonFileCountPlausible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fileCountCheck(tc.cur, tc.ref)
			if c.Type != v1.ConditionFilesDropped || c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.Message == "" {
				t.Errorf("condition = %+v, want %s/%s", c, tc.wantStatus, tc.wantReason)
			}
		})
	}
}
