package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// heldPod is a running pod on node-1 whose volumes a restore-wait init container for
// the VolumeRestore holds, as the webhook makes it; dirs are the volumes' directories
// on the node, made only for the volumes in mounted.
type heldPod struct {
	volume
	vr   *v1.VolumeRestore
	dirs map[string]string
}

func newHeldPod(t *testing.T, ns, name string, volumes []string, mounted ...string) heldPod {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	wait := restorewait.Container(restorewait.ContainerName, string(vr.UID), volumes, "", 0, corev1.Container{Image: "holdfast"})
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	for _, v := range volumes {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	p.Spec.InitContainers = []corev1.Container{wait}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID))) })
	h := heldPod{volume: volume{ns: ns, pod: name, name: volumes[0], uid: p.UID}, vr: vr, dirs: map[string]string{}}
	for _, v := range mounted {
		dir := filepath.Join(fx.kubeletRoot, "pods", string(p.UID), "volumes", "kubernetes.io~empty-dir", v)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		h.dirs[v] = dir
	}
	return h
}

// heldRestore is a PodVolumeRestore of the held pod's volume, owned by its VolumeRestore.
func heldRestore(h heldPod, volume, repo string, mutate func(*v1.PodVolumeRestore)) *v1.PodVolumeRestore {
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: h.pod + "-" + volume, Namespace: h.ns, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1.GroupVersion.String(), Kind: "VolumeRestore", Name: h.vr.Name, UID: h.vr.UID, Controller: ptr.To(true)}}},
		Spec: v1.PodVolumeRestoreSpec{Node: nodeName, Pod: v1.PodReference{Name: h.pod, UID: string(h.uid)}, Volume: volume,
			VolumeRestore: h.vr.Name, SnapshotID: "0123456789abcdef", SourceNamespace: h.ns, SourcePath: "/deployment/app/data",
			StorageLocation: "fs", Repository: repo, Uploader: v1.UploaderKopia},
	}
	if mutate != nil {
		mutate(pvr)
	}
	return pvr
}

// failureMarker returns the reason in restore-wait's failure marker in dir. The agent
// writes the marker before the final status, so a test reads it once the restore is
// Failed or Canceled.
func failureMarker(t *testing.T, dir string, restoreUID, podUID types.UID) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, restorewait.MarkerDir, restorewait.MarkerName(string(restoreUID), string(podUID))+restorewait.FailedSuffix))
	if err != nil {
		t.Errorf("no failure marker for restore-wait: %v", err)
	}
	return string(b)
}

// TestEveryRestoreFailureReleasesRestoreWait is review M1: however a restore fails
// before data moves, restore-wait in the pod gets the failure marker with the reason,
// so the pod shows why instead of waiting in Init for ever.
func TestEveryRestoreFailureReleasesRestoreWait(t *testing.T) {
	testenv.Require(t, env)

	t.Run("left InProgress by an agent that restarted", func(t *testing.T) {
		ns := env.Namespace(t, nil)
		h := newHeldPod(t, ns, "app", []string{"data"}, "data")
		t.Cleanup(func() {
			if fx.agentRunning() != nil {
				_ = fx.startAgent()
			}
		})
		fx.killAgent()
		pvr := heldRestore(h, "data", "fs-kopia", nil)
		if err := env.Client.Create(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		pvr.Status.Phase = v1.RunInProgress
		if err := env.Client.Status().Update(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		if err := fx.startAgent(); err != nil {
			t.Fatal(err)
		}
		got := waitRestorePhase(t, pvr, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
		if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "agent restarted") {
			t.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
		}
		if reason := failureMarker(t, h.dirs["data"], h.vr.UID, h.uid); !strings.Contains(reason, "agent restarted") {
			t.Errorf("failure marker says %q", reason)
		}
	})

	t.Run("canceled before it started", func(t *testing.T) {
		ns := env.Namespace(t, nil)
		h := newHeldPod(t, ns, "app", []string{"data"}, "data")
		pvr := heldRestore(h, "data", "fs-kopia", func(p *v1.PodVolumeRestore) { p.Spec.Cancel = true })
		if err := env.Client.Create(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		waitRestorePhase(t, pvr, v1.RunCanceled)
		if reason := failureMarker(t, h.dirs["data"], h.vr.UID, h.uid); !strings.Contains(reason, "canceled") {
			t.Errorf("failure marker says %q", reason)
		}
	})

	t.Run("repository Stalled: its key is missing", func(t *testing.T) {
		ns := env.Namespace(t, nil)
		repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
		brepo := &v1.BackupRepository{}
		if err := env.Client.Get(ctxFor(t), types.NamespacedName{Namespace: ns, Name: repo}, brepo); err != nil {
			t.Fatal(err)
		}
		// A repository with data whose key Secret is deleted stalls: a new key cannot
		// read it. (A backup gives the repository data.)
		src := newVolume(t, ns, "src")
		if b := waitBackupPhase(t, createBackup(t, src, "src", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed); b.Status.Phase != v1.RunCompleted {
			t.Fatalf("backup: %s", b.Status.Message)
		}
		key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: brepo.Status.KeySecretName}}
		if err := env.Client.Delete(ctxFor(t), key); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "repository Stalled", func() error {
			if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(brepo), brepo); err != nil {
				return err
			}
			if !conditions.IsStalled(brepo.Status.Conditions) {
				return fmt.Errorf("not Stalled: %v", brepo.Status.Conditions)
			}
			return nil
		})
		h := newHeldPod(t, ns, "app", []string{"data"}, "data")
		pvr := heldRestore(h, "data", repo, nil)
		if err := env.Client.Create(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		got := waitRestorePhase(t, pvr, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
		if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "cannot be used") {
			t.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
		}
		if reason := failureMarker(t, h.dirs["data"], h.vr.UID, h.uid); !strings.Contains(reason, "missing") {
			t.Errorf("failure marker says %q", reason)
		}
	})

	t.Run("its volume is not on the node", func(t *testing.T) {
		ns := env.Namespace(t, nil)
		repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
		// restore-wait waits for two volumes; the one restored cannot be found, so
		// the failure goes into the other one.
		h := newHeldPod(t, ns, "app", []string{"data", "lost"}, "data")
		pvr := heldRestore(h, "lost", repo, nil)
		if err := env.Client.Create(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		got := waitRestorePhase(t, pvr, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
		if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "not mounted") {
			t.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
		}
		if reason := failureMarker(t, h.dirs["data"], h.vr.UID, h.uid); !strings.Contains(reason, "not mounted") {
			t.Errorf("failure marker says %q", reason)
		}
	})
}

// TestRestoresNeverWriteThroughAReadOnlyMount is review M9: shared datasets are often
// mounted read-only; a restore into such a volume fails with one sentence and writes
// nothing, not even restore-wait's marker.
func TestRestoresNeverWriteThroughAReadOnlyMount(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	csiPV := func(name string, modes ...corev1.PersistentVolumeAccessMode) string {
		t.Helper()
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:            modes,
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "test.csi.holdfast.dev", VolumeHandle: name}},
			}}
		if err := env.Client.Create(ctxFor(t), pv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctxFor(t), pv) })
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: modes, VolumeName: pv.Name,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		if err := env.Client.Create(ctxFor(t), pvc); err != nil {
			t.Fatal(err)
		}
		return pv.Name
	}
	for _, tc := range []struct {
		name   string
		volume func() (corev1.Volume, string) // the volume and its directory under the pod's volumes
		mount  *corev1.VolumeMount
		want   string
	}{
		{"claim mounted readOnly", func() (corev1.Volume, string) {
			pv := csiPV("ro-claim", corev1.ReadWriteOnce)
			return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "ro-claim", ReadOnly: true}}},
				filepath.Join("kubernetes.io~csi", pv, "mount")
		}, nil, "persistentVolumeClaim.readOnly"},
		{"ReadOnlyMany volume", func() (corev1.Volume, string) {
			pv := csiPV("rox", corev1.ReadOnlyMany)
			return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "rox"}}},
				filepath.Join("kubernetes.io~csi", pv, "mount")
		}, nil, "ReadOnlyMany"},
		{"nfs readOnly", func() (corev1.Volume, string) {
			return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "10.0.0.9", Path: "/datasets", ReadOnly: true}}},
				filepath.Join("kubernetes.io~nfs", "data")
		}, nil, "nfs.readOnly"},
		{"every container mounts it readOnly", func() (corev1.Volume, string) {
			return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				filepath.Join("kubernetes.io~empty-dir", "data")
		}, &corev1.VolumeMount{Name: "data", MountPath: "/data", ReadOnly: true}, "readOnly: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			name = strings.ToLower(name)
			vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
			if err := env.Client.Create(ctxFor(t), vr); err != nil {
				t.Fatal(err)
			}
			vol, rel := tc.volume()
			app := corev1.Container{Name: "app", Image: "busybox"}
			if tc.mount != nil {
				app.VolumeMounts = []corev1.VolumeMount{*tc.mount}
			}
			// Held by restore-wait, which mounts the volume read-write.
			wait := restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: corev1.PodSpec{NodeName: nodeName, InitContainers: []corev1.Container{wait}, Containers: []corev1.Container{app}, Volumes: []corev1.Volume{vol}}}
			if err := env.Client.Create(ctxFor(t), p); err != nil {
				t.Fatal(err)
			}
			p.Status.Phase = corev1.PodRunning
			if err := env.Client.Status().Update(ctxFor(t), p); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(fx.kubeletRoot, "pods", string(p.UID), "volumes", rel)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID))) })
			if err := os.WriteFile(filepath.Join(dir, "shared-dataset"), []byte("read-only data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			h := heldPod{volume: volume{ns: ns, pod: name, name: "data", uid: p.UID}, vr: vr}
			pvr := heldRestore(h, "data", repo, nil)
			if err := env.Client.Create(ctxFor(t), pvr); err != nil {
				t.Fatal(err)
			}
			got := waitRestorePhase(t, pvr, v1.RunFailed, v1.RunCompleted, v1.RunCanceled)
			if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, "volume is mounted read-only") ||
				!strings.Contains(got.Status.Message, tc.want) {
				t.Errorf("phase %s, message %q; want Failed, \"volume is mounted read-only\" and %q", got.Status.Phase, got.Status.Message, tc.want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != "shared-dataset" {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("the read-only volume holds %v after the restore; want only what was there", names)
			}
		})
	}
}
