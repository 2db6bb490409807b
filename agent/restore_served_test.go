package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// sharedClaim makes a bound ReadWriteMany claim whose PersistentVolume's directory is
// no mount point of its own in this tier (a CephFS one: a CSI one must be one, and
// envtest mounts nothing), and returns that PersistentVolume's name.
func sharedClaim(t *testing.T, ns, claim string) string {
	t.Helper()
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + claim},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CephFS: &corev1.CephFSPersistentVolumeSource{Monitors: []string{"10.0.0.9:6789"}}},
		}}
	if err := env.Client.Create(ctxFor(t), pv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pv) })
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeName: pv.Name,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := env.Client.Create(ctxFor(t), pvc); err != nil {
		t.Fatal(err)
	}
	return pv.Name
}

// sharedDataBackup backs up a volume holding shared.txt ("shared data") with kopia into
// repo and returns the Completed backup.
func sharedDataBackup(t *testing.T, ns, repo string) *v1.PodVolumeBackup {
	t.Helper()
	src := newVolume(t, ns, "src")
	if err := os.WriteFile(filepath.Join(src.dir, "shared.txt"), []byte("shared data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	backup := waitBackupPhase(t, createBackup(t, src, "src", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed)
	if backup.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup: %s", backup.Status.Message)
	}
	return backup
}

// newRestore makes a VolumeRestore that selects no pod: the test makes its
// PodVolumeRestores, as the restore controller would.
func newRestore(t *testing.T, ns, name string) *v1.VolumeRestore {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	return vr
}

// hold is one restore-wait of a pod: the restore and the claims (volume name →
// claim) it waits for.
type hold struct {
	vr     *v1.VolumeRestore
	claims map[string]string
	// user, when set, is the user restore-wait runs as.
	user int64
	// readOnly are the volumes the pod mounts read-only (persistentVolumeClaim.readOnly).
	readOnly []string
	// markers makes restore-wait read its markers in the pod's marker volume, as the
	// webhook makes it now; without it, in .holdfast in the volumes, as an earlier
	// webhook made it.
	markers bool
}

// newHeldOn creates a pod on node, Pending (its restore-wait waits), held as the webhook
// holds it: one restore-wait per hold, in that order, each waiting for its volumes in
// name order and learning its pod's UID, and the annotation that names the restores.
func newHeldOn(t *testing.T, ns, name, node string, holds ...hold) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	waited := map[string][]string{}
	for _, h := range holds {
		volumes := slices.Sorted(maps.Keys(h.claims))
		for _, volume := range volumes {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: h.claims[volume], ReadOnly: slices.Contains(h.readOnly, volume)}}})
		}
		waited[h.vr.Name] = volumes
		base := corev1.Container{Image: "holdfast"}
		if h.user != 0 {
			base.SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To(h.user)}
		}
		markers := ""
		if h.markers {
			markers = restorewait.MarkerVolumeName
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, restorewait.Container(restorewait.NextContainerName(p, nil),
			string(h.vr.UID), volumes, markers, 0, base))
	}
	if slices.ContainsFunc(holds, func(h hold) bool { return h.markers }) {
		p.Spec.Volumes = append(p.Spec.Volumes, restorewait.MarkerVolume(restorewait.MarkerVolumeName))
	}
	b, _ := json.Marshal(waited)
	p.Annotations = map[string]string{restorewait.Annotation: string(b)}
	if err := env.Client.Create(ctxFor(t), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Gone, as the kubelet would make it: its agent stops looking at it.
		_ = env.Client.Delete(context.Background(), p, client.GracePeriodSeconds(0))
		_ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(p.UID)))
	})
	return p
}

// claimDir is where the kubelet mounts the claim bound to PersistentVolume pv for pod.
func claimDir(pod *corev1.Pod, pv string) string {
	return filepath.Join(fx.kubeletRoot, "pods", string(pod.UID), "volumes", "kubernetes.io~cephfs", pv)
}

// mountClaim makes pod's directory of the claim bound to pv, as the kubelet does: the
// claim's one filesystem, shared with the pod of dir when one is given.
func mountClaim(t *testing.T, pod *corev1.Pod, pv string, shared ...string) string {
	t.Helper()
	dir := claimDir(pod, pv)
	if len(shared) == 0 {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shared[0], dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// claimRestore is the PodVolumeRestore the restore controller makes for the claim of
// pod's volume: the restore's label, the claim annotation, the restore as controller.
func claimRestore(vr *v1.VolumeRestore, pod *corev1.Pod, node, volume, claim, repo string) *v1.PodVolumeRestore {
	return &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: vr.Name + "-" + pod.Name + "-" + volume, Namespace: vr.Namespace,
			Labels:      map[string]string{v1.LabelRestore: identity.LabelValue(vr.Name)},
			Annotations: map[string]string{restorewait.AnnotationClaim: claim},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1.GroupVersion.String(), Kind: "VolumeRestore", Name: vr.Name, UID: vr.UID, Controller: ptr.To(true)}}},
		Spec: v1.PodVolumeRestoreSpec{Node: node, Pod: v1.PodReference{Name: pod.Name, UID: string(pod.UID)}, Volume: volume,
			VolumeRestore: vr.Name, SnapshotID: "0123456789abcdef", SourceNamespace: vr.Namespace, SourcePath: "/deployment/app/data",
			StorageLocation: "fs", Repository: repo, Uploader: v1.UploaderKopia},
	}
}

// endedElsewhere creates the PodVolumeRestore of a claim for a pod on node-2, where no
// agent of this test runs, and gives it phase as that agent, or the manager, would.
func endedElsewhere(t *testing.T, pvr *v1.PodVolumeRestore, phase v1.RunPhase, msg string) *v1.PodVolumeRestore {
	t.Helper()
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	setPhase(t, pvr, phase, msg)
	return pvr
}

func setPhase(t *testing.T, pvr *v1.PodVolumeRestore, phase v1.RunPhase, msg string) {
	t.Helper()
	pvr.Status.Phase, pvr.Status.Message = phase, msg
	if err := env.Client.Status().Update(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
}

// markerOf reports whether dir holds the done-marker, or the failure marker, of
// restore vr for pod.
func markerOf(dir string, vr *v1.VolumeRestore, pod *corev1.Pod) (done, failed bool) {
	name := filepath.Join(dir, restorewait.MarkerDir, restorewait.MarkerName(string(vr.UID), string(pod.UID)))
	_, errDone := os.Lstat(name)
	_, errFailed := os.Lstat(name + restorewait.FailedSuffix)
	return errDone == nil, errFailed == nil
}

// waitMarked waits until dir holds the marker of restore vr for pod.
func waitMarked(t *testing.T, dir string, vr *v1.VolumeRestore, pod *corev1.Pod) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the marker of restore %s for pod %s", vr.Name, pod.Name), func() error {
		if done, failed := markerOf(dir, vr, pod); !done && !failed {
			return errors.New("none yet")
		}
		return nil
	})
}

// restoreWaitOf runs restore-wait of pod for vr on dirs, as the init container would.
func restoreWaitOf(t *testing.T, pod *corev1.Pod, vr *v1.VolumeRestore, dirs ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxFor(t), 3*time.Minute)
	defer cancel()
	return restorewait.Wait(ctx, restorewait.Options{Volumes: dirs, RestoreUID: string(vr.UID), PodUID: string(pod.UID),
		Interval: 50 * time.Millisecond, Deadline: 2 * time.Minute})
}

// restoreWaitEnded reports pod's restore-wait as the kubelet does once it found its
// marker: terminated with exit code 0, the pod Running.
func restoreWaitEnded(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.InitContainers[0].Name, Image: "holdfast",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
	if err := env.Client.Status().Update(ctxFor(t), pod); err != nil {
		t.Fatal(err)
	}
}

// A claim that several pods of a restore mount is restored once, by the
// PodVolumeRestore of one of them; a pod that comes after that restore ended (a
// replica added while other volumes still restore, a pod created again) was listed as
// served by it, but nobody wrote its marker: it waited in Init until restore-wait's
// deadline while the restore said Completed. Its node's agent releases it, with how
// that restore ended, and only for that restore.
func TestAPodThatComesAfterItsClaimWasRestoredIsReleased(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)

	t.Run("restored on this node", func(t *testing.T) {
		backup := sharedDataBackup(t, ns, repo)
		pv := sharedClaim(t, ns, "shared")
		vr := newRestore(t, ns, "restored")
		held := hold{vr: vr, claims: map[string]string{"data": "shared"}}
		a := newHeldOn(t, ns, "a", nodeName, held)
		dir := mountClaim(t, a, pv)
		// b is there before the restore ends: that end releases it, not its agent.
		b := newHeldOn(t, ns, "b", nodeName, held)
		bDir := mountClaim(t, b, pv, dir)

		pvr := claimRestore(vr, a, nodeName, "data", "shared", repo)
		pvr.Spec.SnapshotID = backup.Status.SnapshotID
		if err := env.Client.Create(ctxFor(t), pvr); err != nil {
			t.Fatal(err)
		}
		if got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed, v1.RunCanceled); got.Status.Phase != v1.RunCompleted {
			t.Fatalf("restore %s: %s", got.Status.Phase, got.Status.Message)
		}
		if done, _ := markerOf(dir, vr, b); !done {
			t.Fatal("the end of the restore did not release pod b, which was there")
		}
		if err := restoreWaitOf(t, b, vr, bDir); err != nil {
			t.Fatalf("restore-wait of pod b: %v", err)
		}
		restoreWaitEnded(t, b)
		// Any change to pod b brings it back to its agent, which must not write its
		// marker again (checked below, once the late pod is released: its marker
		// takes longer than that).
		b.Labels = map[string]string{"touched": "yes"}
		if err := env.Client.Update(ctxFor(t), b); err != nil {
			t.Fatal(err)
		}

		late := newHeldOn(t, ns, "late", nodeName, held)
		lateDir := mountClaim(t, late, pv, dir)
		if err := restoreWaitOf(t, late, vr, lateDir); err != nil {
			t.Fatalf("restore-wait of the pod that came after the restore: %v", err)
		}
		if got, err := os.ReadFile(filepath.Join(lateDir, "shared.txt")); err != nil || string(got) != "shared data\n" {
			t.Errorf("shared.txt = %q, %v", got, err)
		}
		// Pod b's marker, which its restore-wait removed, is not written again.
		if done, failed := markerOf(dir, vr, b); done || failed {
			t.Error("pod b, whose restore-wait ended, got a marker again")
		}
	})

	t.Run("failed on another node", func(t *testing.T) {
		pv := sharedClaim(t, ns, "lost")
		vr := newRestore(t, ns, "failed")
		const why = "snapshot 0123456789abcdef is gone from the store"
		// The pod it was for runs on node-2; the claim's one restore ended there.
		endedElsewhere(t, claimRestore(vr, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: types.UID("x-uid")}}, "node-2", "data", "lost", repo),
			v1.RunFailed, why)
		late := newHeldOn(t, ns, "late-failed", nodeName, hold{vr: vr, claims: map[string]string{"data": "lost"}})
		dir := mountClaim(t, late, pv)
		start := time.Now()
		err := restoreWaitOf(t, late, vr, dir)
		if err == nil || errors.Is(err, restorewait.ErrDeadline) || !strings.Contains(err.Error(), why) {
			t.Fatalf("restore-wait: %v, want the restore's reason %q", err, why)
		}
		t.Logf("restore-wait failed after %s: %v", time.Since(start).Round(time.Second), err)
	})

	t.Run("only for its own restore, never before the data", func(t *testing.T) {
		pvC, pvD, pvE := sharedClaim(t, ns, "c"), sharedClaim(t, ns, "d"), sharedClaim(t, ns, "e")
		vr, other := newRestore(t, ns, "mine"), newRestore(t, ns, "other")
		x := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: types.UID("x-uid")}}
		// Restore mine restored claims d and e; its restore of claim c still runs.
		running := claimRestore(vr, x, "node-2", "c", "c", repo)
		endedElsewhere(t, running, v1.RunInProgress, "")
		endedElsewhere(t, claimRestore(vr, x, "node-2", "d", "d", repo), v1.RunCompleted, "")
		endedElsewhere(t, claimRestore(vr, x, "node-2", "e", "e", repo), v1.RunCompleted, "")

		// p waits for restore mine on c, then d. q waits for restore other on d,
		// which restore mine restored, not other; then for mine on e. Each pod is
		// looked at in one pass, in that order: once the marker of its last volume is
		// there, any marker of the first would be.
		p := newHeldOn(t, ns, "p", nodeName, hold{vr: vr, claims: map[string]string{"c": "c", "d": "d"}})
		pC, pD := mountClaim(t, p, pvC), mountClaim(t, p, pvD)
		q := newHeldOn(t, ns, "q", nodeName, hold{vr: other, claims: map[string]string{"d": "d"}}, hold{vr: vr, claims: map[string]string{"e": "e"}})
		qD, qE := mountClaim(t, q, pvD), mountClaim(t, q, pvE)

		waitMarked(t, pD, vr, p)
		waitMarked(t, qE, vr, q)
		if done, failed := markerOf(pC, vr, p); done || failed {
			t.Fatalf("pod p released on claim c while its restore still runs (done %v, failed %v)", done, failed)
		}
		if _, err := os.Lstat(filepath.Join(qD, restorewait.MarkerDir)); !os.IsNotExist(err) {
			t.Errorf("pod q, waiting for restore other on claim d, got a marker from restore mine: %v", err)
		}

		// The restore of c ends where no agent of this node sees it.
		setPhase(t, running, v1.RunCompleted, "")
		if err := restoreWaitOf(t, p, vr, pC, pD); err != nil {
			t.Fatalf("restore-wait of pod p: %v", err)
		}
	})

	t.Run("pods whose restore-wait runs as different users", func(t *testing.T) {
		pv := sharedClaim(t, ns, "f")
		vr := newRestore(t, ns, "users")
		x := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: types.UID("x-uid")}}
		endedElsewhere(t, claimRestore(vr, x, "node-2", "data", "f", repo), v1.RunCompleted, "")
		first := newHeldOn(t, ns, "first", nodeName, hold{vr: vr, claims: map[string]string{"data": "f"}, user: 1000})
		dir := mountClaim(t, first, pv)
		waitMarked(t, dir, vr, first)
		// .holdfast is first's user's, which the next pod's restore-wait cannot open:
		// it is made root's again, without first's marker, which first's agent then
		// writes again, as first's restore-wait has not taken it.
		next := newHeldOn(t, ns, "next", nodeName, hold{vr: vr, claims: map[string]string{"data": "f"}, user: 2000})
		nextDir := mountClaim(t, next, pv, dir)
		waitMarked(t, dir, vr, next)
		waitMarked(t, dir, vr, first)
		if st, err := os.Stat(filepath.Join(dir, restorewait.MarkerDir)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf(".holdfast: %v, %v; want root's, mode 0755, which both restore-waits can read", st.Mode(), err)
		}
		if err := restoreWaitOf(t, next, vr, nextDir); err != nil {
			t.Errorf("restore-wait of pod next: %v", err)
		}
		if err := restoreWaitOf(t, first, vr, dir); err != nil {
			t.Errorf("restore-wait of pod first: %v", err)
		}
	})

	t.Run("a pod that mounts the claim read-only", func(t *testing.T) {
		pvG, pvH, pvI := sharedClaim(t, ns, "g"), sharedClaim(t, ns, "h"), sharedClaim(t, ns, "i")
		vr := newRestore(t, ns, "readonly")
		x := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: types.UID("x-uid")}}
		endedElsewhere(t, claimRestore(vr, x, "node-2", "data", "g", repo), v1.RunCompleted, "")
		const why = "the repository key was refused"
		endedElsewhere(t, claimRestore(vr, x, "node-2", "lost", "h", repo), v1.RunFailed, why)

		// Restored: nothing is written through a read-only mount; the pod says why.
		ro := newHeldOn(t, ns, "ro", nodeName, hold{vr: vr, claims: map[string]string{"data": "g"}, readOnly: []string{"data"}})
		roDir := mountClaim(t, ro, pvG)
		waitFor(t, "a SharedClaimNotReleased event on pod ro", func() error {
			var list eventsv1.EventList
			if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
				return err
			}
			for _, e := range list.Items {
				if e.Reason == "SharedClaimNotReleased" && e.Regarding.Name == ro.Name {
					if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, "read-only") {
						return fmt.Errorf("event %s %q: want a Warning saying read-only", e.Type, e.Note)
					}
					return nil
				}
			}
			return fmt.Errorf("none among %d events", len(list.Items))
		})
		if _, err := os.Lstat(filepath.Join(roDir, restorewait.MarkerDir)); !os.IsNotExist(err) {
			t.Errorf("something was written through the read-only mount: %v", err)
		}

		// Failed: the failure marker goes into another volume restore-wait waits for.
		ro2 := newHeldOn(t, ns, "ro2", nodeName, hold{vr: vr, claims: map[string]string{"lost": "h", "other": "i"}, readOnly: []string{"lost"}})
		lostDir, otherDir := mountClaim(t, ro2, pvH), mountClaim(t, ro2, pvI)
		err := restoreWaitOf(t, ro2, vr, lostDir, otherDir)
		if err == nil || errors.Is(err, restorewait.ErrDeadline) || !strings.Contains(err.Error(), why) {
			t.Fatalf("restore-wait: %v, want the restore's reason %q", err, why)
		}
		if _, err := os.Lstat(filepath.Join(lostDir, restorewait.MarkerDir)); !os.IsNotExist(err) {
			t.Errorf("something was written through the read-only mount: %v", err)
		}
	})
}
