package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The story of docs/cli.md: the sample policy gold-nightly (config/samples) is live;
// a change in review drops the emptyDirs of pods labelled backup=true from it. preview
// says the claim stays protected and the emptyDir stops being protected.
func TestPreviewOfASamplePolicyChange(t *testing.T) {
	o := newObjects(t)
	e := testenv.Require(t, env)
	sample, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "backup_v1alpha1_volumebackuppolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	live, err := policiesOf(sample)
	if err != nil || len(live) != 1 {
		t.Fatalf("sample policies %v: %v", live, err)
	}
	o.create(&live[0])
	ns := e.Namespace(t, map[string]string{"backup": "gold"})
	o.create(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "db-data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: new("fast"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}})
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "db-data"}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, Labels: map[string]string{"backup": "true"}}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "uploads", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}},
	} {
		p.Spec.NodeName = "node-a"
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:1"}}
		o.create(p)
		p.Status.Phase = corev1.PodRunning
		if err := e.Client.Status().Update(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}

	emptyDirs := `(pvc != null && pvc.spec.storageClassName == "fast") ||
      (has(volume.emptyDir) && pod.metadata.labels[?"backup"].orValue("") == "true")`
	if !strings.Contains(string(sample), emptyDirs) {
		t.Fatalf("the sample's selector changed; update this test:\n%s", sample)
	}
	changed := filepath.Join(t.TempDir(), "backup_v1alpha1_volumebackuppolicy.yaml")
	if err := os.WriteFile(changed, []byte(strings.Replace(string(sample), emptyDirs, `pvc != null && pvc.spec.storageClassName == "fast"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := holdfast(t, "", "preview", "--fail-on-unprotect", "-f", changed)
	if code != ExitUnprotect {
		t.Fatalf("exit %d, want 3:\n%s%s", code, out, stderr)
	}
	wantLines(t, out,
		"VolumeBackupPolicy gold-nightly (Changed): selects 1 volume, skips 0",
		ns+" db data db-data yes",
		"Become protected: none",
		"Stop being protected by any policy: 1",
		ns+" /pod/web/uploads - web "+v1.CoverageProtected+" (gold-nightly) "+v1.CoverageUnprotected)
}
