package restore

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// createBoundClaim creates claim name with labels and marks it Bound, as the
// PersistentVolume controller would (there is none in this tier).
func createBoundClaim(t *testing.T, ns, name string, labels map[string]string) *corev1.PersistentVolumeClaim {
	t.Helper()
	ctx := ctxFor(t)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeName:  "pv-" + name,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if err := env.Client.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	if err := env.Client.Status().Update(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	return pvc
}

// restoreClaims creates a VolumeRestore of the claims labelled app=<app>.
func restoreClaims(t *testing.T, ns, name, app string, running v1.RunningPodsPolicy) *v1.VolumeRestore {
	t.Helper()
	return createRestore(t, ns, name, v1.VolumeRestoreSpec{
		ClaimSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		RunningPods:   running,
		Source:        &v1.RestoreSource{Latest: true},
	})
}

// writerPods lists the writer pods of namespace ns.
func writerPods(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := env.Client.List(ctxFor(t), &pods, client.InNamespace(ns), client.MatchingLabels{LabelComponent: ComponentWriter}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// runPod plays the scheduler and the kubelet: it binds pod to node-1 and marks it Running.
func runPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx := ctxFor(t)
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target: corev1.ObjectReference{Kind: "Node", Name: "node-1"}}
	if err := env.Client.SubResource("binding").Create(ctx, pod, binding); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// goneOrTerminating says whether pod ns/name was deleted (with no kubelet in this tier
// a pod bound to a node stays Terminating).
func goneOrTerminating(t *testing.T, ns, name string) error {
	pod := &corev1.Pod{}
	err := env.Client.Get(ctxFor(t), types.NamespacedName{Namespace: ns, Name: name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case pod.DeletionTimestamp != nil:
		return nil
	}
	return fmt.Errorf("pod %s is not deleted", name)
}

// eventOf finds an event of the restore name with reason whose note contains text.
func eventOf(t *testing.T, ns, name, reason, text string) error {
	var list eventsv1.EventList
	if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range list.Items {
		if e.Reason == reason && e.Regarding.Name == name && strings.Contains(e.Note, text) {
			return nil
		}
	}
	return fmt.Errorf("no %s event of %s saying %q among %d", reason, name, text, len(list.Items))
}

// A StatefulSet scaled to zero keeps its claim; a restore with claimSelector writes
// it through a writer pod: a pod of the right shape (the claim alone, read-write,
// holdfast pause, no token, not held by restore-wait, owned by the restore), then a
// PodVolumeRestore of the claim's own chain for that pod, and the writer pod is
// deleted when that restore ends.
func TestAClaimNoPodUsesIsRestoredThroughAWriterPod(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "vault-1", "/pvc/data-vault-0", "k-vault", time.Now())
	createBoundClaim(t, ns, "data-vault-0", map[string]string{"app": "vault"})
	createBoundClaim(t, ns, "other", map[string]string{"app": "other"})
	vr := restoreClaims(t, ns, "vault", "vault", "")

	var writer corev1.Pod
	testenv.Eventually(t, "a writer pod", func() error {
		pods := writerPods(t, ns)
		if len(pods) != 1 {
			return fmt.Errorf("%d writer pods", len(pods))
		}
		writer = pods[0]
		return nil
	})
	if !IsWriterPod(&writer) || writer.Labels[v1.LabelRestore] != "vault" || writer.Labels[LabelSkipRestoreWait] != "true" ||
		writer.Annotations[AnnotationClaimPod] != "data-vault-0" {
		t.Errorf("writer pod labels %v, annotations %v", writer.Labels, writer.Annotations)
	}
	if owner := metav1.GetControllerOf(&writer); owner == nil || owner.Kind != "VolumeRestore" || owner.UID != vr.UID {
		t.Errorf("writer pod owners %v, want the restore as controller", writer.OwnerReferences)
	}
	spec := writer.Spec
	if len(spec.Volumes) != 1 || spec.Volumes[0].PersistentVolumeClaim == nil || spec.Volumes[0].PersistentVolumeClaim.ClaimName != "data-vault-0" ||
		spec.Volumes[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("writer pod volumes %+v, want the claim alone, read-write", spec.Volumes)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 || !slices.Equal(spec.Containers[0].Args, []string{PauseSubcommand}) ||
		spec.Containers[0].Image != "holdfast:test" || len(spec.Containers[0].VolumeMounts) != 1 || spec.Containers[0].VolumeMounts[0].ReadOnly {
		t.Errorf("writer pod containers %+v (init %d), want one running pause with the claim mounted read-write", spec.Containers, len(spec.InitContainers))
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("writer pod mounts a service account token")
	}
	testenv.Eventually(t, "a WriterPodStarted event", func() error {
		return eventOf(t, ns, "vault", "WriterPodStarted", "claim data-vault-0")
	})

	runPod(t, &writer)
	var pvr v1.PodVolumeRestore
	testenv.Eventually(t, "a PodVolumeRestore for the writer pod", func() error {
		list := restoresOf(t, ns, "vault")
		if len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		pvr = list[0]
		return nil
	})
	want := v1.PodVolumeRestoreSpec{Node: "node-1", Pod: v1.PodReference{Name: writer.Name, UID: string(writer.UID)}, Volume: ClaimPodVolume,
		VolumeRestore: "vault", SnapshotID: "k-vault", PodVolumeBackup: "vault-1", SourceNamespace: ns, SourcePath: "/pvc/data-vault-0",
		StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia}
	if !reflect.DeepEqual(pvr.Spec, want) || pvr.Annotations[annotationClaim] != "data-vault-0" {
		t.Errorf("PodVolumeRestore spec\n got %+v (claim %q)\nwant %+v", pvr.Spec, pvr.Annotations[annotationClaim], want)
	}
	testenv.Eventually(t, "restore InProgress, the claim named", func() error {
		vr := getRestore(t, ns, "vault")
		if vr.Status.Phase != v1.RestoreInProgress || len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].Claim != "data-vault-0" ||
			vr.Status.Volumes[0].Pod != writer.Name {
			return fmt.Errorf("phase %q, volumes %+v", vr.Status.Phase, vr.Status.Volumes)
		}
		return nil
	})
	if err := goneOrTerminating(t, ns, writer.Name); err == nil {
		t.Fatal("the writer pod was deleted while its restore runs")
	}

	finishRestores(t, ns, "vault", v1.RunCompleted, "snapshot restored")
	testenv.Eventually(t, "restore Completed and the writer pod deleted", func() error {
		if vr := getRestore(t, ns, "vault"); vr.Status.Phase != v1.RestoreCompleted || vr.Status.VolumesCompleted != 1 {
			return fmt.Errorf("status %+v", vr.Status)
		}
		return goneOrTerminating(t, ns, writer.Name)
	})
	testenv.Eventually(t, "a WriterPodDeleted event", func() error {
		return eventOf(t, ns, "vault", "WriterPodDeleted", "its restore ended Completed")
	})
	if msg := conditions.ReadyMessage(getRestore(t, ns, "vault").Status.Conditions); msg != "restored 1 claim(s)" {
		t.Errorf("Ready message %q, want it to count claims", msg)
	}
}

// A writer pod of a restore whose PodVolumeRestore ended while no manager ran is found
// by its labels and deleted, whatever its name.
func TestAWriterPodLeftBehindIsDeleted(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	vr := restoreClaims(t, ns, "left", "nothing-matches", "")
	testenv.Eventually(t, "the restore Pending", func() error {
		if p := getRestore(t, ns, "left").Status.Phase; p != v1.RestorePending {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})
	// What a manager that stopped mid-way leaves: a writer pod (named as some other
	// version would name it) and its PodVolumeRestore, which ended since.
	claim := createBoundClaim(t, ns, "gone-later", nil)
	pod := newWriterPod(vr, claim, HelperPod{Image: "holdfast:test"})
	pod.Name = "from-an-earlier-manager"
	pod.Spec.NodeName = "node-1"
	if err := env.Client.Create(ctxFor(t), pod); err != nil {
		t.Fatal(err)
	}
	pvr, err := (&VolumeRestoreReconciler{Client: env.Client}).newPodVolumeRestore(vr, pod, volumePlan{Volume: ClaimPodVolume, SourcePath: "/pvc/gone-later",
		Point: &restorePoint{SnapshotID: "k", StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia, Namespace: ns}})
	if err != nil {
		t.Fatal(err)
	}
	pvr.Annotations = map[string]string{annotationClaim: "gone-later"}
	if err := env.Client.Create(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	pvr.Status.Phase = v1.RunCompleted
	if err := env.Client.Status().Update(ctxFor(t), pvr); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the writer pod left behind deleted", func() error {
		return goneOrTerminating(t, ns, pod.Name)
	})
}

// A claim a running pod uses is not written: status.volumes says ClaimInUse with a
// sentence, and no writer pod or PodVolumeRestore is made.
func TestAClaimARunningPodUsesIsSkippedClaimInUse(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "db-1", "/pvc/data-db-0", "k-db", time.Now())
	createBoundClaim(t, ns, "data-db-0", map[string]string{"app": "db"})
	createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil, claimVolume("data", "data-db-0"))
	restoreClaims(t, ns, "db", "db", "")
	testenv.Eventually(t, "the claim skipped ClaimInUse", func() error {
		vr := getRestore(t, ns, "db")
		if len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].Reason != ReasonClaimInUse || vr.Status.VolumesSkipped != 1 {
			return fmt.Errorf("status %+v", vr.Status)
		}
		if v := vr.Status.Volumes[0]; v.Claim != "data-db-0" || v.Pod != "db-0" || !strings.Contains(v.Message, "pod db-0 uses claim data-db-0") {
			return fmt.Errorf("volume %+v", v)
		}
		return nil
	})
	if pods := writerPods(t, ns); len(pods) != 0 {
		t.Errorf("%d writer pods for a claim a running pod uses", len(pods))
	}
	if list := restoresOf(t, ns, "db"); len(list) != 0 {
		t.Errorf("%d PodVolumeRestores for a claim a running pod uses", len(list))
	}
}

// With runningPods: Overwrite a claim a running pod uses is restored through that pod.
func TestAClaimInUseIsRestoredThroughItsPodUnderOverwrite(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "db-1", "/pvc/data-db-0", "k-db", time.Now())
	createBoundClaim(t, ns, "data-db-0", map[string]string{"app": "db"})
	pod := createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil, claimVolume("data", "data-db-0"))
	restoreClaims(t, ns, "db", "db", v1.RunningPodsOverwrite)
	testenv.Eventually(t, "a PodVolumeRestore through pod db-0", func() error {
		list := restoresOf(t, ns, "db")
		if len(list) != 1 || list[0].Spec.Pod.UID != string(pod.UID) || list[0].Spec.Volume != "data" || list[0].Spec.SourcePath != "/pvc/data-db-0" {
			return fmt.Errorf("PodVolumeRestores %+v", list)
		}
		return nil
	})
	if pods := writerPods(t, ns); len(pods) != 0 {
		t.Errorf("%d writer pods for a claim restored through its running pod", len(pods))
	}
}

// A writer pod that does not run within the start timeout fails its claim with a
// sentence naming the pod and what it is stuck on; the restore ends Failed and the
// writer pod goes.
func TestAWriterPodThatDoesNotRunFailsTheClaim(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "stuck-1", "/pvc/stuck", "k-stuck", time.Now())
	createBoundClaim(t, ns, "stuck", map[string]string{"app": "stuck"})
	restoreClaims(t, ns, "stuck", "stuck", "")
	var writer string
	testenv.Eventually(t, "a writer pod", func() error {
		pods := writerPods(t, ns)
		if len(pods) != 1 {
			return fmt.Errorf("%d writer pods", len(pods))
		}
		writer = pods[0].Name
		return nil
	})
	testenv.Eventually(t, "the restore Failed with the reason", func() error {
		vr := getRestore(t, ns, "stuck")
		if vr.Status.Phase != v1.RestoreFailed || len(vr.Status.Volumes) != 1 {
			return fmt.Errorf("phase %q, volumes %+v", vr.Status.Phase, vr.Status.Volumes)
		}
		want := fmt.Sprintf("claim stuck was not restored: its writer pod %s did not run within %s", writer, writerStartTimeout)
		if v := vr.Status.Volumes[0]; v.Phase != v1.RunFailed || !strings.Contains(v.Message, want) {
			return fmt.Errorf("volume %+v, want a message with %q", v, want)
		}
		return nil
	})
	testenv.Eventually(t, "the stuck writer pod deleted", func() error { return goneOrTerminating(t, ns, writer) })
}

// spec.podSelector and spec.claimSelector: exactly one of them.
func TestAVolumeRestoreSetsExactlyOneSelector(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	sel := metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}
	for name, spec := range map[string]v1.VolumeRestoreSpec{
		"neither": {},
		"both":    {PodSelector: sel, ClaimSelector: &sel},
	} {
		vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
		err := env.Client.Create(ctxFor(t), vr)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "set exactly one of spec.podSelector") {
			t.Errorf("%s: created with %v, want it refused for exactly one selector", name, err)
		}
	}
	for name, spec := range map[string]v1.VolumeRestoreSpec{
		"pods":   {PodSelector: sel},
		"claims": {ClaimSelector: &sel},
	} {
		vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
		if err := env.Client.Create(ctxFor(t), vr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A claim made again for an application that is not running, on a
// WaitForFirstConsumer class, stays Pending until a pod uses it: its writer pod is
// that pod. A Pending claim of an Immediate class is its provisioner's to bind, and
// waits.
func TestAClaimWaitingForItsFirstConsumerGetsAWriterPod(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	classes := map[string]storagev1.VolumeBindingMode{
		ns + "-wffc": storagev1.VolumeBindingWaitForFirstConsumer, ns + "-now": storagev1.VolumeBindingImmediate}
	for name, mode := range classes {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "example.com/none", VolumeBindingMode: ptr.To(mode)}
		if err := env.Client.Create(ctx, sc); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, sc) })
	}
	for claim, class := range map[string]string{"data-late-0": ns + "-wffc", "data-slow-0": ns + "-now"} {
		createBackup(t, ns, claim+"-1", "/pvc/"+claim, "k-"+claim, time.Now())
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns, Labels: map[string]string{"app": "late"}},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: ptr.To(class),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if err := env.Client.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
	}
	restoreClaims(t, ns, "late", "late", "")
	testenv.Eventually(t, "a writer pod for the WaitForFirstConsumer claim, a wait for the other", func() error {
		vr := getRestore(t, ns, "late")
		c := apimeta.FindStatusCondition(vr.Status.Conditions, v1.ConditionReconciling)
		if c == nil || !strings.Contains(c.Message, "claim data-slow-0 to be bound (phase Pending)") {
			return fmt.Errorf("conditions %+v", vr.Status.Conditions)
		}
		pods := writerPods(t, ns)
		if len(pods) != 1 || pods[0].Annotations[AnnotationClaimPod] != "data-late-0" {
			return fmt.Errorf("%d writer pods, want one for data-late-0", len(pods))
		}
		return nil
	})
}
