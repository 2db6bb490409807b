package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// boundClaim creates claim name and marks it Bound, as the PersistentVolume
// controller (which envtest does not run) would.
func (w *workload) boundClaim(name string) {
	w.t.Helper()
	w.claim(name, corev1.PersistentVolumeFilesystem)
	pvc := &corev1.PersistentVolumeClaim{}
	if err := w.e.Client.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: name}, pvc); err != nil {
		w.t.Fatal(err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	if err := w.e.Client.Status().Update(w.ctx, pvc); err != nil {
		w.t.Fatal(err)
	}
}

// waitReader waits for the reader pod of claim in the policy's last run.
func waitReader(t *testing.T, e *testenv.Env, ctx context.Context, ns, policy, claim string) (*corev1.Pod, string) {
	t.Helper()
	pod := &corev1.Pod{}
	var run string
	eventually(t, "the reader pod of claim "+claim, func() error {
		r := getPolicy(t, e, ctx, policy).Status.LastRun
		if r == nil {
			return fmt.Errorf("no run yet")
		}
		run = r.Name
		return e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: readerPodName(run, claim)}, pod)
	})
	return pod, run
}

// runReader plays the scheduler and the kubelet: the reader pod is bound to node and
// Running.
func runReader(t *testing.T, e *testenv.Env, ctx context.Context, pod *corev1.Pod, node string) {
	t.Helper()
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := e.Client.SubResource("binding").Create(ctx, pod, binding); err != nil {
		t.Fatal(err)
	}
	eventually(t, "reader pod "+pod.Name+" Running", func() error {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		return e.Client.Status().Update(ctx, pod)
	})
}

// readerGone waits until the reader pod is deleted (a bound pod keeps its
// deletionTimestamp: envtest has no kubelet to end it).
func readerGone(t *testing.T, e *testenv.Env, ctx context.Context, pod *corev1.Pod) {
	t.Helper()
	eventually(t, "reader pod "+pod.Name+" deleted", func() error {
		got := &corev1.Pod{}
		err := e.Client.Get(ctx, client.ObjectKeyFromObject(pod), got)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case got.DeletionTimestamp != nil:
			return nil
		}
		return fmt.Errorf("reader pod %s still there", pod.Name)
	})
}

func readerBackup(t *testing.T, e *testenv.Env, ctx context.Context, ns, run string) v1.PodVolumeBackup {
	t.Helper()
	var b v1.PodVolumeBackup
	eventually(t, "the reader pod's backup", func() error {
		pvbs := backupsOf(t, e, ctx, ns, client.MatchingLabels{v1.LabelRun: run})
		if len(pvbs) != 1 {
			return fmt.Errorf("%d backups", len(pvbs))
		}
		b = pvbs[0]
		return nil
	})
	return b
}

// A claim no pod uses (a StatefulSet scaled to zero) is backed up through a reader
// pod: the manager starts a small read-only pod that mounts it, creates the claim's
// PodVolumeBackup for that pod once it runs (source /pvc/<claim>, the claim's chain),
// and deletes the pod when the backup ends.
func TestAClaimWithoutPodsIsBackedUpThroughAReaderPod(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.boundClaim("data-db-0")
	w.pod("done", "node-a", corev1.PodSucceeded, nil, claimVol("data", "data-db-0")) // a finished pod does not count
	p := newPolicy("reader-"+w.ns, w.ns)
	w.create(p)
	eventually(t, "the claim selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 1 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	setRunNow(t, e, ctx, p.Name, "reader-1")
	reader, run := waitReader(t, e, ctx, w.ns, p.Name, "data-db-0")

	c := reader.Spec.Containers
	if len(c) != 1 || len(c[0].Args) != 1 || c[0].Args[0] != PauseSubcommand || len(c[0].VolumeMounts) != 1 || !c[0].VolumeMounts[0].ReadOnly ||
		c[0].SecurityContext == nil || c[0].SecurityContext.RunAsNonRoot == nil || !*c[0].SecurityContext.RunAsNonRoot {
		t.Errorf("reader container %+v: want holdfast pause, the claim mounted read-only, non-root", c)
	}
	if v := reader.Spec.Volumes; len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != "data-db-0" || !v[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("reader volumes %+v: want only the claim, read-only", v)
	}
	if a := reader.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("the reader pod mounts a service account token")
	}
	if !IsReaderPod(reader) || reader.Labels[v1.LabelRun] != run {
		t.Errorf("reader labels %v", reader.Labels)
	}
	if n := len(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})); n != 0 {
		t.Fatalf("%d backups before the reader pod runs", n)
	}

	runReader(t, e, ctx, reader, "node-a")
	b := readerBackup(t, e, ctx, w.ns, run)
	if b.Spec.Pod.Name != reader.Name || b.Spec.Pod.UID != string(reader.UID) || b.Spec.Node != "node-a" ||
		b.Spec.SourcePath != "/pvc/data-db-0" || b.Spec.ClaimName != "data-db-0" || b.Spec.Volume != readerVolume {
		t.Errorf("backup spec %+v: want the reader pod's volume on node-a, source /pvc/data-db-0", b.Spec)
	}
	completeBackups(t, e, ctx, []v1.PodVolumeBackup{b})
	readerGone(t, e, ctx, reader)
	eventually(t, "the run Succeeded", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome != v1.RunOutcomeSucceeded || r.VolumesCompleted != 1 {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
}

// With claimsWithoutPods Skip the claim is skipped NotMounted and no pod is started.
func TestClaimsWithoutPodsSkip(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.boundClaim("kept")
	p := newPolicy("skip-"+w.ns, w.ns)
	p.Spec.ClaimsWithoutPods = v1.ClaimsWithoutPodsSkip
	w.create(p)
	eventually(t, "the claim skipped NotMounted", func() error {
		st := getPolicy(t, e, ctx, p.Name).Status
		if st.SelectedVolumes != 0 || skipCount(st.Skipped, SkipNotMounted) != 1 {
			return fmt.Errorf("selected %d, skipped %+v", st.SelectedVolumes, st.Skipped)
		}
		return nil
	})
	setRunNow(t, e, ctx, p.Name, "skip-1")
	eventually(t, "the run ended", func() error {
		if r := getPolicy(t, e, ctx, p.Name).Status.LastRun; r == nil || r.Outcome == v1.RunOutcomeInProgress {
			return fmt.Errorf("last run %+v", r)
		}
		return nil
	})
	var pods corev1.PodList
	if err := e.Client.List(ctx, &pods, client.InNamespace(w.ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d pods started for a Skip policy", len(pods.Items))
	}
}

// The application wins: when a pod that uses the claim appears while the reader pod
// holds it (a StatefulSet scaled up during the backup), the backup is canceled and the
// reader pod deleted at once, so a ReadWriteOnce claim is never kept from its
// application; the run counts the volume Canceled and says the application started.
func TestAReaderPodYieldsToTheApplication(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.boundClaim("data-db-0")
	p := newPolicy("yield-"+w.ns, w.ns)
	w.create(p)
	eventually(t, "the claim selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 1 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	setRunNow(t, e, ctx, p.Name, "yield-1")
	reader, run := waitReader(t, e, ctx, w.ns, p.Name, "data-db-0")
	runReader(t, e, ctx, reader, "node-a")
	b := readerBackup(t, e, ctx, w.ns, run)

	w.pod("db-0", "", corev1.PodPending, controllerRef("StatefulSet", "db", "4b0b1f4e-0000-4000-8000-000000000002"), claimVol("data", "data-db-0"))
	readerGone(t, e, ctx, reader)
	eventually(t, "the backup canceled", func() error {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(&b), &b); err != nil {
			return err
		}
		if !b.Spec.Cancel || !strings.Contains(b.Annotations[AnnotationCancelReason], "pod db-0 of the application started") {
			return fmt.Errorf("cancel %v, annotations %v", b.Spec.Cancel, b.Annotations)
		}
		return nil
	})
	// The agent ends the canceled backup.
	b.Status.Phase, b.Status.Message = v1.RunCanceled, "canceled"
	if err := e.Client.Status().Update(ctx, &b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the run counts the volume Canceled", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome == v1.RunOutcomeInProgress || r.VolumesFailed != 1 || failuresOf(r, ReasonCanceled) != 1 {
			return fmt.Errorf("last run %+v", r)
		}
		for _, f := range r.Failures {
			if f.Reason == ReasonCanceled && strings.Contains(f.Examples[0], "of the application started and uses claim data-db-0") {
				return nil
			}
		}
		return fmt.Errorf("failures %+v do not say the application started", r.Failures)
	})
}

// A reader pod that does not run before its deadline (a ReadWriteOnce volume
// attached to another node) fails the claim with a sentence and is deleted.
func TestAReaderPodThatDoesNotStartFailsTheClaim(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.boundClaim("stuck")
	p := newPolicy("stuck-"+w.ns, w.ns)
	w.create(p)
	eventually(t, "the claim selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 1 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	start := testClock.Now()
	setRunNow(t, e, ctx, p.Name, "stuck-1")
	reader, _ := waitReader(t, e, ctx, w.ns, p.Name, "stuck")
	testClock.SetTime(start.Add(restore.DefaultClaimPodStartTimeout + time.Second))
	poke(t, e, ctx, p.Name, "deadline")
	eventually(t, "the run Failed with the reader's sentence", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome != v1.RunOutcomeFailed || r.VolumesFailed != 1 || failuresOf(r, ReasonCreateFailed) != 1 {
			return fmt.Errorf("last run %+v", r)
		}
		if ex := r.Failures[0].Examples[0]; !strings.Contains(ex, "claim stuck was not backed up: its reader pod "+reader.Name+" did not run within 2m0s") {
			return fmt.Errorf("failure %q", ex)
		}
		return nil
	})
	readerGone(t, e, ctx, reader)
}

// Reader pods are found again by their labels: one left by a manager that stopped
// mid-way, whose backup is gone, is deleted.
func TestAStaleReaderPodIsDeleted(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	w.boundClaim("kept")
	p := newPolicy("stale-"+w.ns, w.ns)
	w.create(p)
	eventually(t, "the policy Ready", func() error {
		if c := meta(getPolicy(t, e, ctx, p.Name), v1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})
	p = getPolicy(t, e, ctx, p.Name)
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "kept"}}
	stale := newReaderPod(p, p.Name+"-20261206000000", pvc, readerDefaults())
	w.create(stale)
	readerGone(t, e, ctx, stale)
}

func readerDefaults() restore.HelperPod {
	h, _ := restore.HelperPodFromConfigMap(nil, "holdfast:test")
	return h
}
