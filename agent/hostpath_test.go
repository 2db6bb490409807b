package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// hostPathClaim makes claim, bound to a hostPath PersistentVolume of path as a
// local-path provisioner makes it, and a running pod on node-1 that mounts it as
// volume data, with init containers inits; the kubelet mounts nothing for it under
// the pod's directory.
func hostPathClaim(t *testing.T, ns, pod, claim, path string, inits []corev1.Container) volume {
	t.Helper()
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + claim},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}},
		}}
	if err := env.Client.Create(ctxFor(t), pv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pv) })
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: pv.Name,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := env.Client.Create(ctxFor(t), pvc); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: nodeName, InitContainers: inits, Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}}}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	return volume{ns: ns, pod: pod, name: "data", uid: p.UID, dir: path}
}

// claimBackup is the PodVolumeBackup a run makes for a claim: source /pvc/<claim>.
func claimBackup(t *testing.T, v volume, name, claim, repo string) *v1.PodVolumeBackup {
	t.Helper()
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v.ns, Labels: map[string]string{v1.LabelPolicy: "agent-test"}},
		Spec: v1.PodVolumeBackupSpec{Node: nodeName, Pod: v1.PodReference{Name: v.pod, UID: string(v.uid)}, Volume: v.name, ClaimName: claim,
			SourcePath: "/pvc/" + claim, StorageLocation: "minio", Repository: repo, Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	return pvb
}

// Issue 19 item 2: with --host-path-roots, a claim on a hostPath PersistentVolume under
// a root (a local-path provisioner's) is backed up through the real, jailed data mover
// and restored into a new pod's claim on another such volume.
func TestAHostPathClaimUnderTheRootsIsBackedUpAndRestored(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	srcDir := filepath.Join(fx.hostRoot, "pvc-src_"+ns+"_data")
	if err := os.MkdirAll(filepath.Join(srcDir, "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"report.txt": "quarterly numbers\n", "sub/notes.txt": "kept on the node\n"} {
		if err := os.WriteFile(filepath.Join(srcDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := hostPathClaim(t, ns, "app-1", "data", srcDir, nil)
	done := waitBackupPhase(t, claimBackup(t, src, "first", "data", repo), v1.RunCompleted, v1.RunFailed)
	if done.Status.Phase != v1.RunCompleted || done.Status.Progress.TotalFiles != 2 {
		t.Fatalf("backup of the hostPath claim: %s (%s), %d files; want Completed with 2 files", done.Status.Phase, done.Status.Message, done.Status.Progress.TotalFiles)
	}

	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "restore", Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	dstDir := filepath.Join(fx.hostRoot, "pvc-dst_"+ns+"_restored")
	if err := os.MkdirAll(dstDir, 0o777); err != nil {
		t.Fatal(err)
	}
	dst := hostPathClaim(t, ns, "app-2", "restored", dstDir, []corev1.Container{
		restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})})
	h := heldPod{volume: dst, vr: vr}
	pvr := heldRestore(h, "data", repo, func(p *v1.PodVolumeRestore) {
		p.Spec.SnapshotID, p.Spec.SourcePath, p.Spec.StorageLocation = done.Status.SnapshotID, "/pvc/data", "minio"
	})
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunCompleted {
		t.Fatalf("restore into the hostPath claim: %s (%s)", got.Status.Phase, got.Status.Message)
	}
	for name, want := range map[string]string{"report.txt": "quarterly numbers\n", "sub/notes.txt": "kept on the node\n"} {
		if b, err := os.ReadFile(filepath.Join(dstDir, name)); err != nil || string(b) != want {
			t.Errorf("restored %s = %q, %v; want %q", name, b, err, want)
		}
	}
	if err := restorewait.Wait(ctxFor(t), restorewait.Options{Volumes: []string{dstDir}, RestoreUID: string(vr.UID), PodUID: string(dst.uid)}); err != nil {
		t.Errorf("restore-wait on the restored hostPath volume: %v", err)
	}
}

// The agent reads and writes no hostPath directory outside its roots, and follows no
// symbolic link below them: a tenant who writes one volume under a root cannot point
// the agent at another directory of the node. Each case fails with a sentence that
// says why and names no host path; the directory outside is never read or written.
// (A path with ".." the API server refuses; package hostpath refuses it too.)
func TestTheAgentRefusesHostPathsOutsideItsRootsOrThroughLinks(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	outside := t.TempDir() // a directory of the node outside the roots
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("SENTINEL: the node's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outside, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A tenant's volume under the root holds a link out of it.
	tenant := filepath.Join(fx.hostRoot, "pvc-tenant_"+ns)
	if err := os.MkdirAll(tenant, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(tenant, "escape")); err != nil {
		t.Fatal(err)
	}
	linkedRoot := filepath.Join(fx.hostRoot, "link-"+ns)
	if err := os.Symlink(outside, linkedRoot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tenant); _ = os.Remove(linkedRoot) })

	for i, tc := range []struct {
		name, path, want string
	}{
		{"through a tenant's link", filepath.Join(tenant, "escape", "data"), "symbolic link"},
		{"a link under the root", linkedRoot, "symbolic link"},
		{"outside the roots", outside, "outside --host-path-roots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claim := "c" + string(rune('a'+i))
			v := hostPathClaim(t, ns, "app-"+claim, claim, tc.path, nil)
			got := waitBackupPhase(t, claimBackup(t, v, "backup-"+claim, claim, repo), v1.RunCompleted, v1.RunFailed)
			t.Logf("backup: %s", got.Status.Message)
			if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, tc.want) {
				t.Errorf("backup: %s (%s), want Failed for a %s", got.Status.Phase, got.Status.Message, tc.want)
			}
			if strings.Contains(got.Status.Message, outside) || strings.Contains(got.Status.Message, fx.hostRoot) {
				t.Errorf("the status message names a host path: %q", got.Status.Message)
			}
		})
	}

	// A restore through the tenant's link writes nothing outside the root.
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "restore", Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	dst := hostPathClaim(t, ns, "app-restore", "restored", filepath.Join(tenant, "escape", "data"), []corev1.Container{
		restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})})
	pvr := heldRestore(heldPod{volume: dst, vr: vr}, "data", repo, func(p *v1.PodVolumeRestore) { p.Spec.StorageLocation = "minio" })
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "symbolic link") {
		t.Errorf("restore through a link: %s (%s), want Failed for the link", got.Status.Phase, got.Status.Message)
	}
	if entries, _ := os.ReadDir(filepath.Join(outside, "data")); len(entries) != 0 {
		t.Errorf("the agent wrote %d entries outside the root", len(entries))
	}
}
