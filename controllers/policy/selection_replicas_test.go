package policy

import (
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// replicaPod is a Running pod in namespace shop with the given owners, created at
// created, with the given volumes.
func replicaPod(name string, uid types.UID, created time.Time, owners []metav1.OwnerReference, vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: uid, CreationTimestamp: metav1.NewTime(created), OwnerReferences: owners},
		Spec:       corev1.PodSpec{NodeName: "node-1", Volumes: vols},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func selectAll(t *testing.T) *celpolicy.Selector {
	t.Helper()
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	sel, err := engine.Compile(v1.VolumeSelector{Volumes: `true`})
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func targetPaths(ts []target) map[string]string {
	out := map[string]string{}
	for _, t := range ts {
		out[t.pod.Name+"/"+t.volume] = t.sourcePath
	}
	return out
}

// Review M3: the replicas of a Deployment each hold their own emptyDir, so each keeps
// its own chain (a slot of its own); a claim that several pods mount is one copy of
// the data, backed up once per run.
func TestSelectVolumesGivesEachCopyOfTheDataOneIdentity(t *testing.T) {
	sel := selectAll(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	rs := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7", UID: "rs", Controller: new(true)}}
	owners := ownerFromCache(map[string]*metav1.OwnerReference{
		"shop/web-5d8f7": {APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Controller: new(true)}})
	cache := corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	shared := corev1.Volume{Name: "shared", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "files"}}}
	claims := map[string]*corev1.PersistentVolumeClaim{claimKey("shop", "files"): {ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: "shop"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}}}}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

	tests := []struct {
		name     string
		pods     []*corev1.Pod
		previous map[types.UID][]string
		want     map[string]string // <pod>/<volume> -> source path
	}{{
		name: "two replicas with an emptyDir: two slots, the oldest in slot 0 (the path of existing backups)",
		pods: []*corev1.Pod{
			replicaPod("web-5d8f7-bbbbb", "b", t0.Add(time.Minute), rs, cache),
			replicaPod("web-5d8f7-aaaaa", "a", t0, rs, cache),
		},
		want: map[string]string{"web-5d8f7-aaaaa/cache": "/deployment/web/cache", "web-5d8f7-bbbbb/cache": "/deployment/web/replica-1/cache"},
	}, {
		name: "a replaced replica takes the slot its predecessor left; the other keeps its own",
		pods: []*corev1.Pod{
			replicaPod("web-5d8f7-bbbbb", "b", t0.Add(time.Minute), rs, cache),
			replicaPod("web-5d8f7-ccccc", "c", t0.Add(time.Hour), rs, cache),
			replicaPod("web-5d8f7-ddddd", "d", t0.Add(2*time.Hour), rs, cache),
		},
		previous: map[types.UID][]string{"b": {"/deployment/web/replica-1/cache"}, "c": {"/deployment/web/cache", "/deployment/web/replica-2/cache"}},
		want: map[string]string{"web-5d8f7-bbbbb/cache": "/deployment/web/replica-1/cache", "web-5d8f7-ccccc/cache": "/deployment/web/cache",
			"web-5d8f7-ddddd/cache": "/deployment/web/replica-2/cache"},
	}, {
		name: "two pods mounting one claim: one target, through the oldest pod",
		pods: []*corev1.Pod{
			replicaPod("web-5d8f7-bbbbb", "b", t0.Add(time.Minute), rs, shared),
			replicaPod("web-5d8f7-aaaaa", "a", t0, rs, shared),
			replicaPod("tool", "t", t0.Add(-time.Minute), nil, shared),
		},
		want: map[string]string{"tool/shared": "/pvc/files"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := &snapshot{namespaces: []*corev1.Namespace{ns}, pods: map[string][]*corev1.Pod{"shop": tt.pods},
				claims: claims, rsOwner: owners, backedUpPaths: tt.previous}
			out := selectVolumes(sel, snap, v1.ClaimsWithoutPodsSkip)
			got := targetPaths(out.targets)
			if len(got) != len(out.targets) || !maps.Equal(got, tt.want) {
				t.Errorf("targets (pod/volume -> source path) = %v, want %v", got, tt.want)
			}
			paths := map[string]bool{}
			for _, tg := range out.targets {
				if paths[tg.sourcePath] {
					t.Errorf("two targets back up %s in one run", tg.sourcePath)
				}
				paths[tg.sourcePath] = true
			}
			if len(out.skipped) != 0 {
				t.Errorf("skipped %v", out.skipped)
			}
		})
	}
}

// The policy's backups tell which slot each pod already backs up into, newest first.
func TestBackedUpPathsNewestFirst(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	pvb := func(name, uid, path string, at time.Time) v1.PodVolumeBackup {
		return v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(at)},
			Spec: v1.PodVolumeBackupSpec{Pod: v1.PodReference{Name: "p", UID: uid}, SourcePath: path}}
	}
	got := backedUpPaths([]v1.PodVolumeBackup{pvb("old", "a", "/deployment/web/replica-2/cache", t0), pvb("new", "a", "/deployment/web/cache", t0.Add(time.Hour))})
	if want := []string{"/deployment/web/cache", "/deployment/web/replica-2/cache"}; !slices.Equal(got["a"], want) {
		t.Errorf("backedUpPaths = %v, want %v", got["a"], want)
	}
}
