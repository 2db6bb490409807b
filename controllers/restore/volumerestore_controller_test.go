package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func claimVolume(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func emptyDirVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// createPod creates a pod and, when node is set, schedules it there and marks it Running
// (there is no kubelet in this tier).
func createPod(t *testing.T, ns, name string, labels map[string]string, node string, owners []metav1.OwnerReference, vols ...corev1.Volume) *corev1.Pod {
	t.Helper()
	ctx := ctxFor(t)
	mounts := []corev1.VolumeMount{}
	for _, v := range vols {
		mounts = append(mounts, corev1.VolumeMount{Name: v.Name, MountPath: "/" + v.Name})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, OwnerReferences: owners},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "busybox", VolumeMounts: mounts}},
			Volumes:    vols,
		},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	if node != "" {
		pod.Status.Phase = corev1.PodRunning
		if err := env.Client.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	return pod
}

// createBackup creates a Completed PodVolumeBackup of sourcePath, as an agent leaves it.
func createBackup(t *testing.T, ns, name, sourcePath, snapshot string, started time.Time) *v1.PodVolumeBackup {
	t.Helper()
	return createBackupWith(t, ns, name, sourcePath, snapshot, started, nil)
}

// createBackupWith is createBackup whose status mutate completes (a condition, a
// file count).
func createBackupWith(t *testing.T, ns, name, sourcePath, snapshot string, started time.Time, mutate func(*v1.PodVolumeBackupStatus)) *v1.PodVolumeBackup {
	t.Helper()
	ctx := ctxFor(t)
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "old", UID: "old-uid"}, Volume: "v",
			SourcePath: sourcePath, StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, pvb); err != nil {
		t.Fatal(err)
	}
	start := metav1.NewTime(started)
	pvb.Status = v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: snapshot, StartTime: &start, CompletionTime: &start}
	if mutate != nil {
		mutate(&pvb.Status)
	}
	if err := env.Client.Status().Update(ctx, pvb); err != nil {
		t.Fatal(err)
	}
	return pvb
}

// afterSecondOf waits until the clock (the API server's, on this machine) has passed
// the second of at: creation times have whole seconds, and backups are ordered by them.
func afterSecondOf(t *testing.T, at time.Time) time.Time {
	t.Helper()
	next := at.Truncate(time.Second).Add(time.Second)
	testenv.Eventually(t, "the next second", func() error {
		if time.Now().Before(next) {
			return fmt.Errorf("still before %s", next)
		}
		return nil
	})
	return next
}

func createRestore(t *testing.T, ns, name string, spec v1.VolumeRestoreSpec) *v1.VolumeRestore {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	return vr
}

func restoresOf(t *testing.T, ns, vr string) []v1.PodVolumeRestore {
	t.Helper()
	var list v1.PodVolumeRestoreList
	if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr)}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// finishRestores plays the agent: it marks every PodVolumeRestore of vr with phase.
func finishRestores(t *testing.T, ns, vr string, phase v1.RunPhase, msg string) {
	t.Helper()
	for _, pvr := range restoresOf(t, ns, vr) {
		pvr.Status.Phase, pvr.Status.Message = phase, msg
		if err := env.Client.Status().Update(ctxFor(t), &pvr); err != nil {
			t.Fatal(err)
		}
	}
}

func getRestore(t *testing.T, ns, name string) *v1.VolumeRestore {
	t.Helper()
	vr := &v1.VolumeRestore{}
	if err := env.Client.Get(ctxFor(t), types.NamespacedName{Namespace: ns, Name: name}, vr); err != nil {
		t.Fatal(err)
	}
	return vr
}

func kstatusOf(t *testing.T, obj runtime.Object) status.Status {
	t.Helper()
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: raw})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func TestDataOnlyRestoreIntoARunningPodUsesTheLatestBackup(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	now := time.Now()
	// Backups are ordered by their creation (the API server's clock), not by the
	// start time the agent writes from its node's clock: the older backup's node
	// clock was an hour ahead (review M6).
	older := createBackup(t, ns, "older", "/pvc/data-db-0", "k-old", now.Add(time.Hour))
	afterSecondOf(t, older.CreationTimestamp.Time)
	createBackup(t, ns, "newer", "/pvc/data-db-0", "k-new", now.Add(-time.Hour))
	createBackup(t, ns, "other-volume", "/pvc/data-db-1", "k-other", now)
	pod := createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil,
		claimVolume("data", "data-db-0"),
		corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}})
	if len(pod.Spec.InitContainers) != 0 {
		t.Fatalf("a pod created before any restore must not get an init container: %v", pod.Spec.InitContainers)
	}

	createRestore(t, ns, "db", v1.VolumeRestoreSpec{
		RunningPods: v1.RunningPodsOverwrite,
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	var pvr v1.PodVolumeRestore
	testenv.Eventually(t, "a PodVolumeRestore for db-0/data", func() error {
		list := restoresOf(t, ns, "db")
		if len(list) != 1 {
			return fmt.Errorf("%d PodVolumeRestores", len(list))
		}
		pvr = list[0]
		return nil
	})
	want := v1.PodVolumeRestoreSpec{Node: "node-1", Pod: v1.PodReference{Name: "db-0", UID: string(pod.UID)}, Volume: "data",
		VolumeRestore: "db", SnapshotID: "k-new", PodVolumeBackup: "newer", SourceNamespace: ns, SourcePath: "/pvc/data-db-0",
		StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia}
	if !reflect.DeepEqual(pvr.Spec, want) {
		t.Errorf("PodVolumeRestore spec\n got %+v\nwant %+v", pvr.Spec, want)
	}
	if owner := metav1.GetControllerOf(&pvr); owner == nil || owner.Kind != "VolumeRestore" || owner.Name != "db" {
		t.Errorf("the PodVolumeRestore is not owned by its VolumeRestore: %v", pvr.OwnerReferences)
	}
	testenv.Eventually(t, "restore InProgress", func() error {
		if vr := getRestore(t, ns, "db"); vr.Status.Phase != v1.RestoreInProgress || vr.Status.VolumesTotal != 1 {
			return fmt.Errorf("phase %q, total %d", vr.Status.Phase, vr.Status.VolumesTotal)
		}
		return nil
	})
	if s := kstatusOf(t, getRestore(t, ns, "db")); s != status.InProgressStatus {
		t.Errorf("kstatus of a running restore = %s, want InProgress", s)
	}

	finishRestores(t, ns, "db", v1.RunCompleted, "")
	testenv.Eventually(t, "restore Completed", func() error {
		vr := getRestore(t, ns, "db")
		if vr.Status.Phase != v1.RestoreCompleted || vr.Status.VolumesCompleted != 1 || vr.Status.CompletionTime == nil {
			return fmt.Errorf("status %+v", vr.Status)
		}
		return nil
	})
	vr := getRestore(t, ns, "db")
	if s := kstatusOf(t, vr); s != status.CurrentStatus {
		t.Errorf("kstatus of a completed restore = %s, want Current", s)
	}
	if len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].SnapshotID != "k-new" || vr.Status.Volumes[0].Phase != v1.RunCompleted {
		t.Errorf("status.volumes = %+v", vr.Status.Volumes)
	}

	out, err := env.Kubectl(ctxFor(t), "get", "vr", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Completed") {
		t.Errorf("kubectl get vr does not show the phase:\n%s", out)
	}
}

func TestRestoreBeforeATimePicksTheBackupOfThatTime(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	now := time.Now().Truncate(time.Second)
	monday := createBackup(t, ns, "monday", "/pvc/data", "k-monday", now.Add(-48*time.Hour))
	before := metav1.NewTime(afterSecondOf(t, monday.CreationTimestamp.Time))
	afterSecondOf(t, before.Time)
	// Created after the time, though its node's clock, behind, says it started
	// before it: the API server's clock decides (review M6).
	createBackup(t, ns, "tuesday", "/pvc/data", "k-tuesday", now.Add(-24*time.Hour))
	createPod(t, ns, "app", map[string]string{"app": "x"}, "node-1", nil, claimVolume("data", "data"))
	createRestore(t, ns, "to-monday", v1.VolumeRestoreSpec{
		RunningPods: v1.RunningPodsOverwrite,
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
		Source:      &v1.RestoreSource{Before: &before},
	})
	testenv.Eventually(t, "a restore of monday's snapshot", func() error {
		list := restoresOf(t, ns, "to-monday")
		if len(list) != 1 || list[0].Spec.SnapshotID != "k-monday" {
			return fmt.Errorf("%d restores (%v)", len(list), list)
		}
		return nil
	})
}

// "latest" passes over a backup flagged FilesDropped (the volume was likely not
// mounted when it was read) while an unflagged one of the source is left; with only
// flagged ones left it restores the newest and says so in status.volumes and in an
// event (review M6).
func TestLatestPassesOverABackupFlaggedFilesDropped(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	flag := func(st *v1.PodVolumeBackupStatus) {
		st.Conditions = []metav1.Condition{{Type: v1.ConditionFilesDropped, Status: metav1.ConditionTrue, Reason: v1.ReasonNoFiles,
			Message: "This backup holds no files", LastTransitionTime: metav1.Now()}}
	}
	good := createBackup(t, ns, "good", "/pvc/data-a", "k-good", time.Now())
	afterSecondOf(t, good.CreationTimestamp.Time)
	createBackupWith(t, ns, "empty", "/pvc/data-a", "k-empty", time.Now(), flag)
	createBackupWith(t, ns, "only-empty", "/pvc/data-b", "k-only-empty", time.Now(), flag)
	createPod(t, ns, "a", map[string]string{"app": "f"}, "node-1", nil, claimVolume("data", "data-a"))
	createPod(t, ns, "b", map[string]string{"app": "f"}, "node-1", nil, claimVolume("data", "data-b"))
	createRestore(t, ns, "f", v1.VolumeRestoreSpec{
		RunningPods: v1.RunningPodsOverwrite,
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "f"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	testenv.Eventually(t, "restores of the unflagged backup of a and the flagged one of b", func() error {
		got := map[string]string{}
		for _, pvr := range restoresOf(t, ns, "f") {
			got[pvr.Spec.Pod.Name] = pvr.Spec.SnapshotID
		}
		if got["a"] != "k-good" || got["b"] != "k-only-empty" {
			return fmt.Errorf("restores %v", got)
		}
		return nil
	})
	testenv.Eventually(t, "status.volumes saying b gets a flagged backup", func() error {
		for _, v := range getRestore(t, ns, "f").Status.Volumes {
			if v.Pod == "a" && v.Message != "" {
				return fmt.Errorf("volume of a: %q", v.Message)
			}
			if v.Pod == "b" && !strings.Contains(v.Message, "only-empty although it is flagged FilesDropped") {
				return fmt.Errorf("volume of b: %q", v.Message)
			}
		}
		return nil
	})
	testenv.Eventually(t, "a RestoringFlaggedBackup event", func() error {
		var list eventsv1.EventList
		if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == ReasonFlaggedBackup && e.Regarding.Name == "f" && strings.Contains(e.Note, "pod b volume data") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none RestoringFlaggedBackup for pod b", len(list.Items))
	})
}

func TestANamedVolumeWithoutBackupFailsWithAReason(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createPod(t, ns, "app", map[string]string{"app": "y"}, "node-1", nil, claimVolume("data", "data"), emptyDirVolume("cache"))
	createBackup(t, ns, "cache-backup", "/pod/app/cache", "k-cache", time.Now())
	createRestore(t, ns, "r", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "y"}},
		RunningPods: v1.RunningPodsOverwrite,
		Volumes:     []v1.RestoreVolume{{Name: "data"}, {Name: "cache"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	testenv.Eventually(t, "the cache volume being restored", func() error {
		if n := len(restoresOf(t, ns, "r")); n != 1 {
			return fmt.Errorf("%d restores", n)
		}
		return nil
	})
	finishRestores(t, ns, "r", v1.RunCompleted, "")
	testenv.Eventually(t, "restore PartiallyFailed", func() error {
		vr := getRestore(t, ns, "r")
		if vr.Status.Phase != v1.RestorePartiallyFailed {
			return fmt.Errorf("phase %q", vr.Status.Phase)
		}
		return nil
	})
	vr := getRestore(t, ns, "r")
	msg := vr.Status.Conditions[slices.IndexFunc(vr.Status.Conditions, func(c metav1.Condition) bool { return c.Type == v1.ConditionReady })].Message
	if want := "no completed backup of /pvc/data in namespace " + ns; !strings.Contains(msg, want) {
		t.Errorf("Ready message %q does not say %q", msg, want)
	}
	if vr.Status.VolumesFailed != 1 || vr.Status.VolumesCompleted != 1 || vr.Status.VolumesTotal != 2 {
		t.Errorf("counts: %d completed, %d failed, %d total", vr.Status.VolumesCompleted, vr.Status.VolumesFailed, vr.Status.VolumesTotal)
	}
	if s := kstatusOf(t, vr); s != status.FailedStatus {
		t.Errorf("kstatus of a partially failed restore = %s, want Failed", s)
	}
}

func TestRestoringAnotherNamespacesBackupsNeedsItsGrant(t *testing.T) {
	testenv.Require(t, env)
	source := env.Namespace(t, nil)
	target := env.Namespace(t, nil)
	createBackup(t, source, "b", "/pvc/data", "k-src", time.Now())
	createPod(t, target, "app", map[string]string{"app": "z"}, "node-1", nil, claimVolume("data", "data"))
	createRestore(t, target, "clone", v1.VolumeRestoreSpec{
		RunningPods:     v1.RunningPodsOverwrite,
		PodSelector:     metav1.LabelSelector{MatchLabels: map[string]string{"app": "z"}},
		Source:          &v1.RestoreSource{Latest: true},
		SourceNamespace: source,
	})
	testenv.Eventually(t, "the restore stalled for want of a grant", func() error {
		vr := getRestore(t, target, "clone")
		if s := kstatusOf(t, vr); s != status.FailedStatus {
			return fmt.Errorf("kstatus %s, conditions %+v", s, vr.Status.Conditions)
		}
		return nil
	})
	if n := len(restoresOf(t, target, "clone")); n != 0 {
		t.Fatalf("%d PodVolumeRestores created without a grant", n)
	}

	nsObj := &corev1.Namespace{}
	if err := env.Client.Get(ctxFor(t), types.NamespacedName{Name: source}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Annotations = map[string]string{v1.AnnotationRestoreInto: "elsewhere, " + target}
	if err := env.Client.Update(ctxFor(t), nsObj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the granted restore proceeding", func() error {
		list := restoresOf(t, target, "clone")
		if len(list) != 1 || list[0].Spec.SourceNamespace != source || list[0].Spec.SnapshotID != "k-src" {
			return fmt.Errorf("restores %v", list)
		}
		return nil
	})
}

// TestNewPodsWaitForTheirData is the GitOps flow: the restore is committed with the
// application, so the pods are created while it is pending. The webhook gives them a
// restore-wait init container for exactly the volumes that have a backup, and the
// controller restores exactly those volumes.
func TestNewPodsWaitForTheirData(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	createRestore(t, ns, "app-restore", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	// A Deployment's pods are owned by a ReplicaSet owned by the Deployment.
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d9f", Namespace: ns, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep-uid", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	createBackup(t, ns, "web-cache", "/deployment/web/cache", "k-cache", time.Now())
	owners := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}

	var pod *corev1.Pod
	testenv.Eventually(t, "the webhook seeing the ReplicaSet", func() error {
		// The webhook reads ReplicaSets from the manager's cache: retry with fresh
		// pod names until it has caught up.
		p := createPod(t, ns, fmt.Sprintf("web-5d9f-%d", time.Now().UnixNano()%100000), map[string]string{"app": "web"}, "", owners,
			emptyDirVolume("cache"), emptyDirVolume("tmp"))
		if len(p.Spec.InitContainers) == 0 {
			// Unscheduled, it would keep the restore waiting for it: remove it.
			_ = env.Client.Delete(ctx, p, client.GracePeriodSeconds(0))
			return fmt.Errorf("pod %s got no init container", p.Name)
		}
		pod = p
		return nil
	})
	init := pod.Spec.InitContainers[0]
	if init.Name != restorewait.ContainerName || init.Image != "holdfast:test" {
		t.Errorf("init container %s image %s", init.Name, init.Image)
	}
	wantArgs := []string{"restore-wait", "--restore-uid", string(getRestore(t, ns, "app-restore").UID), "--volume", "/holdfast-restore/cache",
		"--marker-dir", restorewait.MarkerMountPath, "--deadline", restorewait.DefaultDeadline.String()}
	if !slices.Equal(init.Args, wantArgs) {
		t.Errorf("args %v, want %v (only the volume with a backup)", init.Args, wantArgs)
	}
	// It reads its markers in a memory emptyDir that it alone mounts, which the API
	// server admitted with the pod.
	if len(init.VolumeMounts) != 2 || init.VolumeMounts[0].Name != "cache" || init.VolumeMounts[1].Name != restorewait.MarkerVolumeName ||
		!init.VolumeMounts[1].ReadOnly {
		t.Errorf("mounts %v", init.VolumeMounts)
	}
	if markers, err := restorewait.MarkerVolumeOf(pod, string(getRestore(t, ns, "app-restore").UID)); markers != restorewait.MarkerVolumeName || err != nil {
		t.Errorf("marker volume %q, %v; volumes %+v", markers, err, pod.Spec.Volumes)
	}
	if sc := init.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65534 || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("securityContext %+v, want the unprivileged default", init.SecurityContext)
	}
	var waited map[string][]string
	if err := json.Unmarshal([]byte(pod.Annotations[v1.AnnotationRestoreWait]), &waited); err != nil || !slices.Equal(waited["app-restore"], []string{"cache"}) {
		t.Errorf("annotation %q (%v)", pod.Annotations[v1.AnnotationRestoreWait], err)
	}

	// A backup of tmp appears after the pod was created: it must not be restored
	// under the application, because restore-wait does not wait for it.
	createBackup(t, ns, "web-tmp", "/deployment/web/tmp", "k-tmp", time.Now())
	pod.Spec.NodeName = "node-1"
	if err := env.Client.SubResource("binding").Create(ctx, pod, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: ns},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "node-1"},
	}); err != nil {
		t.Fatalf("binding the pod to node-1: %v", err)
	}
	testenv.Eventually(t, "a restore of the cache volume on node-1", func() error {
		list := restoresOf(t, ns, "app-restore")
		if len(list) != 1 || list[0].Spec.Volume != "cache" || list[0].Spec.Node != "node-1" || list[0].Spec.SourcePath != "/deployment/web/cache" {
			return fmt.Errorf("restores %+v", list)
		}
		return nil
	})

	// Once the restore is done, new pods start without waiting.
	finishRestores(t, ns, "app-restore", v1.RunCompleted, "")
	testenv.Eventually(t, "restore Completed", func() error {
		if p := getRestore(t, ns, "app-restore").Status.Phase; p != v1.RestoreCompleted {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})
	testenv.Eventually(t, "the webhook seeing the completed restore", func() error {
		p := createPod(t, ns, fmt.Sprintf("web-5d9f-late-%d", time.Now().UnixNano()%100000), map[string]string{"app": "web"}, "", owners, emptyDirVolume("cache"))
		if len(p.Spec.InitContainers) != 0 {
			return fmt.Errorf("a pod created after the restore completed still waits: %v", p.Spec.InitContainers[0].Name)
		}
		return nil
	})
}

// warnings collects the admission warnings the API server passes on to a client.
type warnings struct{ msgs []string }

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) { w.msgs = append(w.msgs, text) }

func TestHelperConfigMapChangesTheInitContainer(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: HelperConfigMapName, Namespace: operatorNamespace},
		Data:       map[string]string{"image": "mirror.internal/holdfast:1.0", "memLimit": "128Mi", "cpuRequest": "lots"},
	}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), cm) })
	createBackup(t, ns, "b", "/pod/solo/data", "k1", time.Now())
	createRestore(t, ns, "r", v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}}, Source: &v1.RestoreSource{Latest: true}})
	// The controller has seen the restore once it reports it Pending.
	testenv.Eventually(t, "the restore reported Pending", func() error {
		if p := getRestore(t, ns, "r").Status.Phase; p != v1.RestorePending {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})

	sink := &warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = sink
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "solo", Namespace: ns, Labels: map[string]string{"app": "solo"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes: []corev1.Volume{emptyDirVolume("data")}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers: %v", pod.Spec.InitContainers)
	}
	init := pod.Spec.InitContainers[0]
	if init.Image != "mirror.internal/holdfast:1.0" {
		t.Errorf("image %q, want the ConfigMap's", init.Image)
	}
	if got := init.Resources.Limits.Memory().String(); got != "128Mi" {
		t.Errorf("memory limit %s, want 128Mi", got)
	}
	if got := init.Resources.Requests.Cpu().String(); got != "10m" {
		t.Errorf("cpu request %s, want the default 10m (the ConfigMap's value does not parse)", got)
	}
	if len(sink.msgs) != 1 || !strings.Contains(sink.msgs[0], "key cpuRequest ignored") {
		t.Errorf("admission warnings %q, want one about cpuRequest", sink.msgs)
	}
}

// TestARestoreAppliedBeforeTheAppSaysWhenNewPodsWillWait is the namespace deleted and
// applied again from Git: the restore is applied before the application, and its
// message is what the person (or the pipeline) waits for before applying the
// application. The pod webhook plans from the restore points in the repositories'
// status, so until those are listed the restore must not say that pods created now
// wait (they would not); while the store holds only backups of an earlier namespace
// that this one does not adopt, it says so, naming the namespace UID and the
// annotation, before any pod starts on an empty volume; once adopted, pods created
// then wait for their data.
func TestARestoreAppliedBeforeTheAppSaysWhenNewPodsWillWait(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	const earlier = "00000000-0000-4000-8000-00000000ea71"
	taken := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	storeCatalog.set(ns, storage.RestorePoint{
		Snapshot: repository.Snapshot{ID: "k-earlier", SourcePath: "/deployment/web/cache", StartTime: taken,
			Tags: map[string]string{identity.TagNamespaceUID: earlier}},
		Namespace: ns, StorageLocation: "default", Uploader: v1.UploaderKopia, Repository: "default-kopia",
	})
	t.Cleanup(func() { storeCatalog.set(ns) })
	// The repository the restore found in the store, connected: Ready, its restore
	// points not listed yet.
	brepo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: "default-kopia", Namespace: ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: "default", Uploader: v1.UploaderKopia}}
	if err := env.Client.Create(ctx, brepo); err != nil {
		t.Fatal(err)
	}
	brepo.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Connected",
		Message: "connected", LastTransitionTime: metav1.Now(), ObservedGeneration: brepo.Generation}}
	if err := env.Client.Status().Update(ctx, brepo); err != nil {
		t.Fatal(err)
	}
	createRestore(t, ns, "web-restore", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Source:      &v1.RestoreSource{Latest: true},
	})
	waitingFor := func(what, reason string, want ...string) {
		t.Helper()
		testenv.Eventually(t, what, func() error {
			vr := getRestore(t, ns, "web-restore")
			c := apimeta.FindStatusCondition(vr.Status.Conditions, v1.ConditionReady)
			if c == nil || c.Reason != reason || vr.Status.Phase != v1.RestorePending {
				return fmt.Errorf("phase %s, Ready %+v", vr.Status.Phase, c)
			}
			for _, w := range want {
				if !strings.Contains(c.Message, w) {
					return fmt.Errorf("message %q lacks %q", c.Message, w)
				}
			}
			return nil
		})
	}
	waitingFor("the restore reading the store", ReasonReadingStore, "BackupRepository "+ns+"/default-kopia: listing its restore points")

	brepo.Status.RestorePoints = []v1.SourceRestorePoints{{SourcePath: "/deployment/web/cache", NamespaceUID: earlier, Snapshots: 1,
		Oldest: metav1.NewTime(taken), Latest: metav1.NewTime(taken), LatestSnapshotID: "k-earlier"}}
	now := metav1.Now()
	brepo.Status.RestorePointsTime = &now
	if err := env.Client.Status().Update(ctx, brepo); err != nil {
		t.Fatal(err)
	}
	waitingFor("the restore naming the earlier namespace", ReasonBackupsNotAdopted,
		"the store holds 1 backup(s) taken in an earlier namespace "+ns+" (uid "+earlier+")",
		v1.AnnotationAdoptBackups+": <uid> (or *) on namespace "+ns, "pods created now do not wait for those")

	nsObj := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Annotations = map[string]string{v1.AnnotationAdoptBackups: "*"}
	if err := env.Client.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	waitingFor("the restore ready for the application", ReasonWaitingForPods, "pods created now wait for their data")

	// What the message promises: the application's pod, created now, waits.
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7c4b", Namespace: ns, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep-uid", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	owners := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
	testenv.Eventually(t, "the webhook seeing the ReplicaSet", func() error {
		p := createPod(t, ns, fmt.Sprintf("web-7c4b-%d", time.Now().UnixNano()%100000), map[string]string{"app": "web"}, "", owners, emptyDirVolume("cache"))
		if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != restorewait.ContainerName {
			_ = env.Client.Delete(ctx, p, client.GracePeriodSeconds(0))
			return fmt.Errorf("pod %s got no restore-wait", p.Name)
		}
		return nil
	})
}

// TestARunningPodIsOverwrittenOnlyWhenTheRestoreSaysSo is the review's H3 story: a
// running pod, then a restore that finds no backup (Pending), then a backup of the
// pod's volume completes and the pod changes. A restore left with the default
// runningPods: Skip never writes into the running application and says so per
// volume; only runningPods: Overwrite restores into it.
func TestARunningPodIsOverwrittenOnlyWhenTheRestoreSaysSo(t *testing.T) {
	testenv.Require(t, env)
	for _, tc := range []struct {
		name        string
		runningPods v1.RunningPodsPolicy
		wantRestore bool
	}{
		{"default Skip", "", false},
		{"Overwrite", v1.RunningPodsOverwrite, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t, nil)
			ctx := ctxFor(t)
			pod := createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil, claimVolume("data", "data-db-0"))
			createRestore(t, ns, "late", v1.VolumeRestoreSpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				RunningPods: tc.runningPods,
			})
			testenv.Eventually(t, "the restore Pending with nothing to restore", func() error {
				vr := getRestore(t, ns, "late")
				if vr.Status.Phase != v1.RestorePending || vr.Status.ObservedGeneration != vr.Generation {
					return fmt.Errorf("phase %q, observedGeneration %d", vr.Status.Phase, vr.Status.ObservedGeneration)
				}
				return nil
			})
			if got := getRestore(t, ns, "late").Spec.RunningPods; got != tc.runningPods && !(tc.runningPods == "" && got == v1.RunningPodsSkip) {
				t.Errorf("spec.runningPods = %q", got)
			}

			// A backup of the pod's claim completes later, and the pod changes.
			createBackup(t, ns, "nightly", "/pvc/data-db-0", "k-night", time.Now())
			pod.Labels["touched"] = "yes"
			if err := env.Client.Update(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if tc.wantRestore {
				testenv.Eventually(t, "a data-only restore into the running pod", func() error {
					if list := restoresOf(t, ns, "late"); len(list) != 1 || list[0].Spec.SnapshotID != "k-night" {
						return fmt.Errorf("restores %+v", list)
					}
					return nil
				})
				return
			}
			var vr *v1.VolumeRestore
			testenv.Eventually(t, "the pod's volume reported skipped", func() error {
				vr = getRestore(t, ns, "late")
				if vr.Status.VolumesSkipped != 1 || len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].Reason != ReasonPodNotHeld {
					return fmt.Errorf("status %+v", vr.Status)
				}
				return nil
			})
			if n := len(restoresOf(t, ns, "late")); n != 0 {
				t.Fatalf("%d PodVolumeRestores into the running pod; runningPods is Skip", n)
			}
			v := vr.Status.Volumes[0]
			if v.Pod != "db-0" || v.Volume != "data" || !strings.Contains(v.Message, "was created before this restore") ||
				!strings.Contains(v.Message, "spec.runningPods: Overwrite") {
				t.Errorf("status.volumes[0] = %+v", v)
			}
			if vr.Status.Phase != v1.RestorePending || vr.Status.VolumesTotal != 0 {
				t.Errorf("phase %s, total %d: a restore that restores nothing is still Pending", vr.Status.Phase, vr.Status.VolumesTotal)
			}
			out, err := env.Kubectl(ctx, "describe", "vr", "-n", ns, "late")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"PodNotHeld", "Volumes Skipped:  1"} {
				if !strings.Contains(out, want) {
					t.Errorf("kubectl describe vr does not show %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestARestoreThatRestoredNothingExpires: past spec.pendingDeadline a restore that
// started nothing ends Expired, and then neither holds a new pod nor restores a
// backup that appears later.
func TestARestoreThatRestoredNothingExpires(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createRestore(t, ns, "short", v1.VolumeRestoreSpec{
		PodSelector:     metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}},
		RunningPods:     v1.RunningPodsOverwrite,
		PendingDeadline: &metav1.Duration{Duration: time.Minute},
	})
	var vr *v1.VolumeRestore
	// The shortest deadline the API takes is a minute.
	if err := testenv.Poll(ctxFor(t), 150*time.Second, func() error {
		vr = getRestore(t, ns, "short")
		if vr.Status.Phase != v1.RestoreExpired {
			return fmt.Errorf("phase %q", vr.Status.Phase)
		}
		return nil
	}); err != nil {
		t.Fatalf("the restore Expired: %v", err)
	}
	c := apimeta.FindStatusCondition(vr.Status.Conditions, v1.ConditionStalled)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonExpired || !strings.Contains(c.Message, "spec.pendingDeadline (1m0s") {
		t.Errorf("Stalled condition %+v", c)
	}
	if vr.Status.CompletionTime == nil {
		t.Error("an expired restore has no completionTime")
	}
	createBackup(t, ns, "b", "/pod/solo/data", "k1", time.Now())
	p := createPod(t, ns, "solo", map[string]string{"app": "solo"}, "", nil, emptyDirVolume("data"))
	if len(p.Spec.InitContainers) != 0 {
		t.Errorf("an expired restore held a new pod: %v", p.Spec.InitContainers)
	}
	p.Spec.NodeName = "node-1"
	if err := env.Client.SubResource("binding").Create(ctxFor(t), p, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "node-1"},
	}); err != nil {
		t.Fatal(err)
	}
	// A second restore of the same pod restores it: by then the controller has seen
	// the scheduled pod and the backup, and the expired one still created nothing.
	createRestore(t, ns, "again", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}},
		RunningPods: v1.RunningPodsOverwrite,
	})
	testenv.Eventually(t, "the new restore restoring the pod", func() error {
		if n := len(restoresOf(t, ns, "again")); n != 1 {
			return fmt.Errorf("%d PodVolumeRestores", n)
		}
		return nil
	})
	if n := len(restoresOf(t, ns, "short")); n != 0 {
		t.Errorf("the expired restore created %d PodVolumeRestores", n)
	}
	if p := getRestore(t, ns, "short").Status.Phase; p != v1.RestoreExpired {
		t.Errorf("phase %s after expiry", p)
	}
}

// bindPod schedules pod on node-1, as the scheduler does.
func bindPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := env.Client.SubResource("binding").Create(ctxFor(t), pod, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "node-1"},
	}); err != nil {
		t.Fatalf("binding pod %s: %v", pod.Name, err)
	}
}

// An OrderedReady StatefulSet creates its second pod only once the first is Ready,
// after the first pod's restore: the restore must go on until the second pod exists
// and has waited for its data too, rather than end and let it start empty.
func TestARestoreWaitsForTheLaterPodsOfAStatefulSet(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	ctx := ctxFor(t)
	createBackup(t, ns, "db-0-data", "/statefulset/db/0/data", "k0", time.Now())
	createBackup(t, ns, "db-1-data", "/statefulset/db/1/data", "k1", time.Now())
	createRestore(t, ns, "db", v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}})
	testenv.Eventually(t, "the restore ready for pods", func() error {
		if vr := getRestore(t, ns, "db"); !readyForPods(vr) {
			return fmt.Errorf("status %+v", vr.Status.Conditions)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "busybox"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	owners := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: sts.UID, Controller: ptr.To(true)}}
	restoreOrdinal := func(name string) {
		t.Helper()
		pod := createPod(t, ns, name, map[string]string{"app": "db"}, "", owners, emptyDirVolume("data"))
		if !restorewait.Holds(pod, string(getRestore(t, ns, "db").UID)) {
			t.Fatalf("pod %s does not wait for its data: %v", name, pod.Spec.InitContainers)
		}
		bindPod(t, pod)
		testenv.Eventually(t, "a restore of "+name, func() error {
			for _, pvr := range restoresOf(t, ns, "db") {
				if pvr.Spec.Pod.Name == name {
					return nil
				}
			}
			return fmt.Errorf("none")
		})
		finishRestores(t, ns, "db", v1.RunCompleted, "")
	}

	restoreOrdinal("db-0")
	testenv.Eventually(t, "the restore waiting for db-1", func() error {
		vr := getRestore(t, ns, "db")
		c := apimeta.FindStatusCondition(vr.Status.Conditions, v1.ConditionReconciling)
		if vr.Status.Phase != v1.RestoreInProgress || vr.Status.VolumesCompleted != 1 || c == nil ||
			!strings.Contains(c.Message, "waiting for 1 more pod(s) of its StatefulSets to be created") {
			return fmt.Errorf("phase %s, %d completed, Reconciling %+v", vr.Status.Phase, vr.Status.VolumesCompleted, c)
		}
		return nil
	})

	restoreOrdinal("db-1")
	testenv.Eventually(t, "the restore Completed with both ordinals", func() error {
		if vr := getRestore(t, ns, "db"); vr.Status.Phase != v1.RestoreCompleted || vr.Status.VolumesCompleted != 2 {
			return fmt.Errorf("phase %s, %d completed", vr.Status.Phase, vr.Status.VolumesCompleted)
		}
		return nil
	})
}

// A pod created after the restore that the webhook missed (here: it opted out by
// label, as a pod admitted while the manager was down would be) runs without
// restore-wait; the restore leaves it alone and says why.
func TestAPodTheWebhookMissedIsNotOverwritten(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "b", "/pod/late/data", "k1", time.Now())
	createRestore(t, ns, "r", v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "late"}}})
	testenv.Eventually(t, "the restore ready for pods", func() error {
		if vr := getRestore(t, ns, "r"); !readyForPods(vr) {
			return fmt.Errorf("status %+v", vr.Status.Conditions)
		}
		return nil
	})
	pod := createPod(t, ns, "late", map[string]string{"app": "late", LabelSkipRestoreWait: "true"}, "", nil, emptyDirVolume("data"))
	if len(pod.Spec.InitContainers) != 0 || restorewait.Gated(pod) {
		t.Fatalf("the webhook saw the pod: %+v", pod.Spec)
	}
	bindPod(t, pod)
	testenv.Eventually(t, "the pod's volume reported skipped", func() error {
		vr := getRestore(t, ns, "r")
		if vr.Status.VolumesSkipped != 1 || len(vr.Status.Volumes) != 1 {
			return fmt.Errorf("status %+v", vr.Status)
		}
		if v := vr.Status.Volumes[0]; v.Reason != ReasonPodNotHeld || !strings.Contains(v.Message, "without waiting for it in restore-wait") {
			return fmt.Errorf("status.volumes[0] %+v", v)
		}
		return nil
	})
	if n := len(restoresOf(t, ns, "r")); n != 0 {
		t.Errorf("%d PodVolumeRestores into a pod that runs without waiting", n)
	}
}

// TestALongRestoreNameRestores: a VolumeRestore's name may be 253 characters, a label
// value only 63 (review M8). A restore with a 100-character name and storage location
// creates its PodVolumeRestores, every label valid, and ends Completed.
func TestALongRestoreNameRestores(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	name := "restore-" + strings.Repeat("of-the-shop-database-", 4) + "after-the-incident-of-december"
	if len(name) < 100 {
		t.Fatalf("name of %d characters", len(name))
	}
	createPod(t, ns, "db-0", map[string]string{"app": "db"}, "node-1", nil, claimVolume("data", "data-db-0"))
	createBackup(t, ns, "nightly", "/pvc/data-db-0", "k-night", time.Now())
	createRestore(t, ns, name, v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		RunningPods: v1.RunningPodsOverwrite,
	})
	testenv.Eventually(t, "a PodVolumeRestore for the long-named restore", func() error {
		if list := restoresOf(t, ns, name); len(list) != 1 {
			vr := getRestore(t, ns, name)
			return fmt.Errorf("%d restores; status %+v", len(list), vr.Status)
		}
		return nil
	})
	pvr := restoresOf(t, ns, name)[0]
	for k, v := range pvr.Labels {
		if len(v) > 63 {
			t.Errorf("label %s has a value of %d characters", k, len(v))
		}
	}
	finishRestores(t, ns, name, v1.RunCompleted, "")
	testenv.Eventually(t, "the long-named restore Completed", func() error {
		if vr := getRestore(t, ns, name); vr.Status.Phase != v1.RestoreCompleted {
			return fmt.Errorf("phase %q", vr.Status.Phase)
		}
		return nil
	})
}
