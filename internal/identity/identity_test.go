package identity

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func owned(kind, name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: "u", Controller: new(true)}}
}

func TestSourcePath(t *testing.T) {
	rsOwners := func(ns, name string) *metav1.OwnerReference {
		if ns == "shop" && name == "web-7d4b9c" {
			return &metav1.OwnerReference{Kind: "Deployment", Name: "web", Controller: new(true)}
		}
		return nil
	}
	emptyDir := corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	claim := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"}}}
	ephemeral := corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}
	tests := []struct {
		name   string
		pod    corev1.Pod
		volume corev1.Volume
		want   string
	}{
		{"claim wins over owner", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop", OwnerReferences: owned("StatefulSet", "db")}}, claim, "/pvc/data-db-0"},
		{"ephemeral claim", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-x", Namespace: "shop"}}, ephemeral, "/pvc/job-x-scratch"},
		{"bare pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug", Namespace: "shop"}}, emptyDir, "/pod/debug/cache"},
		{"deployment via replicaset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-7d4b9c-x2x9z", Namespace: "shop", OwnerReferences: owned("ReplicaSet", "web-7d4b9c")}}, emptyDir, "/deployment/web/cache"},
		{"replicaset without owner", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rs-abcde", Namespace: "shop", OwnerReferences: owned("ReplicaSet", "rs")}}, emptyDir, "/replicaset/rs/cache"},
		{"statefulset ordinal", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-12", Namespace: "shop", OwnerReferences: owned("StatefulSet", "db")}}, emptyDir, "/statefulset/db/12/cache"},
		{"daemonset node", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "shop", OwnerReferences: owned("DaemonSet", "agent")}, Spec: corev1.PodSpec{NodeName: "node-1"}}, emptyDir, "/daemonset/agent/node-1/cache"},
		{"job", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "etl-x", Namespace: "shop", OwnerReferences: owned("Job", "etl")}}, emptyDir, "/job/etl/cache"},
		{"non-controller owner is ignored", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{Kind: "Thing", Name: "t"}}}}, emptyDir, "/pod/p/cache"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SourcePath(&tt.pod, &tt.volume, rsOwners); got != tt.want {
				t.Errorf("SourcePath = %q, want %q", got, tt.want)
			}
		})
	}
	// Without a resolver a Deployment's pods are named by their ReplicaSet.
	pod := tests[3].pod
	if got := SourcePath(&pod, &emptyDir, nil); got != "/replicaset/web-7d4b9c/cache" {
		t.Errorf("SourcePath without resolver = %q", got)
	}
}

func TestRepositoryName(t *testing.T) {
	long := strings.Repeat("a", 250)
	tests := []struct {
		location string
		uploader v1.Uploader
		want     string
	}{
		{"default", v1.UploaderKopia, "default-kopia"},
		{"s3.eu", v1.UploaderRestic, "s3.eu-restic"},
		{long, v1.UploaderKopia, long[:242] + "-" + hash(long, "kopia")},
	}
	for _, tt := range tests {
		got := RepositoryName(tt.location, tt.uploader)
		if got != tt.want {
			t.Errorf("RepositoryName(%q, %q) = %q, want %q", tt.location, tt.uploader, got, tt.want)
		}
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("RepositoryName(%q) = %q is not a valid name: %v", tt.location, got, errs)
		}
	}
	if RepositoryName(long, v1.UploaderKopia) == RepositoryName(long, v1.UploaderRestic) {
		t.Error("shortened names of two uploaders collide")
	}
}

func TestPodVolumeBackupName(t *testing.T) {
	a := PodVolumeBackupName("nightly-20260101000000", "web-0", "data")
	if a != PodVolumeBackupName("nightly-20260101000000", "web-0", "data") {
		t.Fatal("name is not deterministic")
	}
	if !strings.HasPrefix(a, "nightly-20260101000000-web-0-data-") {
		t.Errorf("name %q does not start with run, pod and volume", a)
	}
	if PodVolumeBackupName("r", "a-b", "c") == PodVolumeBackupName("r", "a", "b-c") {
		t.Error("names of different (pod, volume) collide")
	}
	long := PodVolumeBackupName(strings.Repeat("r", 63), strings.Repeat("p", 253), strings.Repeat("v", 63))
	if len(long) > MaxNameLength {
		t.Errorf("name is %d characters", len(long))
	}
	for _, n := range []string{a, long} {
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("%q is not a valid name: %v", n, errs)
		}
	}
}
