package identity

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestReplicaSourcePath(t *testing.T) {
	rsOwners := func(ns, name string) *metav1.OwnerReference {
		if name == "web-7d4b9c" {
			return &metav1.OwnerReference{Kind: "Deployment", Name: "web", Controller: new(true)}
		}
		return nil
	}
	emptyDir := corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	claim := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "files"}}}
	pod := func(name string, owners []metav1.OwnerReference, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", OwnerReferences: owners}, Spec: corev1.PodSpec{NodeName: node}}
	}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		volume corev1.Volume
		slot   int
		want   string
	}{
		{"deployment slot 0 is the path of existing backups", pod("web-7d4b9c-x", owned("ReplicaSet", "web-7d4b9c"), "n"), emptyDir, 0, "/deployment/web/cache"},
		{"deployment slot 2", pod("web-7d4b9c-x", owned("ReplicaSet", "web-7d4b9c"), "n"), emptyDir, 2, "/deployment/web/replica-2/cache"},
		{"job slot 1", pod("etl-x", owned("Job", "etl"), "n"), emptyDir, 1, "/job/etl/replica-1/cache"},
		{"a claim has no slot", pod("web-7d4b9c-x", owned("ReplicaSet", "web-7d4b9c"), "n"), claim, 3, "/pvc/files"},
		{"statefulset pods have ordinals", pod("db-1", owned("StatefulSet", "db"), "n"), emptyDir, 3, "/statefulset/db/1/cache"},
		{"daemonset pods have nodes", pod("agent-x", owned("DaemonSet", "agent"), "n"), emptyDir, 3, "/daemonset/agent/n/cache"},
		{"an unscheduled daemonset pod has no slot either", pod("agent-x", owned("DaemonSet", "agent"), ""), emptyDir, 3, "/daemonset/agent/cache"},
		{"a bare pod has its name", pod("debug", nil, "n"), emptyDir, 3, "/pod/debug/cache"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ReplicaSourcePath(tt.pod, &tt.volume, rsOwners, tt.slot)
			if got != tt.want {
				t.Fatalf("ReplicaSourcePath = %q, want %q", got, tt.want)
			}
			if owner, ok := ReplicaOwner(tt.pod, rsOwners); ok && Replicated(tt.pod, &tt.volume, rsOwners) {
				if slot, ok := SlotOf(owner, got); !ok || slot != tt.slot {
					t.Errorf("SlotOf(%q, %q) = %d, %v; want %d", owner, got, slot, ok, tt.slot)
				}
			}
		})
	}
}

func TestSlotOf(t *testing.T) {
	tests := []struct {
		path string
		slot int
		ok   bool
	}{
		{"/deployment/web/cache", 0, true},
		{"/deployment/web/replica-1/cache", 1, true},
		{"/deployment/web/replica-12/cache", 12, true},
		{"/deployment/web/replica-1", 0, true}, // slot 0 of a volume named replica-1
		{"/deployment/web/replica-01/cache", 0, false},
		{"/deployment/web/replica-0/cache", 0, false},
		{"/deployment/web/replica-x/cache", 0, false},
		{"/deployment/web/other/cache", 0, false},
		{"/deployment/web/replica-1/cache/x", 0, false},
		{"/deployment/webshop/cache", 0, false},
		{"/deployment/web", 0, false},
	}
	for _, tt := range tests {
		if slot, ok := SlotOf("/deployment/web", tt.path); slot != tt.slot || ok != tt.ok {
			t.Errorf("SlotOf(%q) = %d, %v; want %d, %v", tt.path, slot, ok, tt.slot, tt.ok)
		}
	}
}

func TestAssignSlots(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	pod := func(name string, uid types.UID, age time.Duration) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid, CreationTimestamp: metav1.NewTime(t0.Add(-age))}}
	}
	a, b, c := pod("a", "a", 3*time.Hour), pod("b", "b", 2*time.Hour), pod("c", "c", time.Hour)
	same := pod("d", "d", time.Hour) // c's creation time: the name orders them
	tests := []struct {
		name     string
		pods     []*corev1.Pod
		previous map[types.UID]int
		allowed  func(int) bool
		want     map[types.UID]int
	}{
		{"oldest first", []*corev1.Pod{c, a, b}, nil, nil, map[types.UID]int{"a": 0, "b": 1, "c": 2}},
		{"same creation time: by name", []*corev1.Pod{same, c}, nil, nil, map[types.UID]int{"c": 0, "d": 1}},
		{"previous slots are kept; new pods fill the gaps", []*corev1.Pod{a, b, c}, map[types.UID]int{"b": 0, "c": 2}, nil, map[types.UID]int{"b": 0, "a": 1, "c": 2}},
		{"two pods claiming one slot: the older keeps it", []*corev1.Pod{b, a}, map[types.UID]int{"a": 1, "b": 1}, nil, map[types.UID]int{"a": 1, "b": 0}},
		{"only allowed slots; a pod without one is left out", []*corev1.Pod{a, b, c}, nil, func(s int) bool { return s == 0 || s == 3 }, map[types.UID]int{"a": 0, "b": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AssignSlots(tt.pods, tt.previous, tt.allowed)
			if len(got) != len(tt.want) {
				t.Fatalf("AssignSlots = %v, want %v", got, tt.want)
			}
			for uid, slot := range tt.want {
				if got[uid] != slot {
					t.Errorf("AssignSlots = %v, want %v", got, tt.want)
				}
			}
		})
	}
}
