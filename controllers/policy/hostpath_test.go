package policy

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
)

// localPathRoot is where k3s's local-path provisioner makes its volumes.
const localPathRoot = "/var/lib/rancher/k3s/storage"

// localPathWorkload makes, in a new namespace, a running pod with two claims: data,
// on a CSI PersistentVolume, and local, on a hostPath PersistentVolume under
// localPathRoot as a local-path provisioner makes it.
func localPathWorkload(t *testing.T, w *workload) {
	t.Helper()
	for _, pv := range []*corev1.PersistentVolume{
		{ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-local"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: localPathRoot + "/pvc-1_" + w.ns + "_local", Type: new(corev1.HostPathDirectoryOrCreate)}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-data"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "disk.csi.example", VolumeHandle: "vol-1"}}}},
	} {
		pv.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: mustQuantity("1Gi")}
		pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
		w.create(pv)
		t.Cleanup(func() { _ = w.e.Client.Delete(w.ctx, pv) })
	}
	for _, claim := range []string{"local", "data"} {
		w.create(&corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: w.ns},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: w.ns + "-" + claim,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: mustQuantity("1Gi")}},
			},
		})
	}
	w.pod("app", "node-a", corev1.PodRunning, nil, claimVol("local", "local"), claimVol("data", "data"))
}

// Issue 19 item 2, the plain install on k3s or kind: a claim on a hostPath
// PersistentVolume (the default storage class's) is skipped as HostPath at selection,
// with an event that says how to back it up, and the run over it and a normal claim
// Succeeds: no PodVolumeBackup is made for it, so no agent fails it.
func TestAClaimOnAHostPathVolumeIsSkippedAndTheRunSucceeds(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	localPathWorkload(t, w)
	p := newPolicy("local-path-"+w.ns, w.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)

	var run string
	eventually(t, "the run's outcome", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		st := p.Status
		if st.SelectedVolumes != 1 || len(st.Skipped) != 1 || st.Skipped[0].Reason != SkipHostPath ||
			fmt.Sprint(st.Skipped[0].Examples) != fmt.Sprint([]string{w.ns + "/app/local"}) {
			return fmt.Errorf("selected %d, skipped %+v; want data selected and local skipped HostPath", st.SelectedVolumes, st.Skipped)
		}
		if st.LastRun == nil {
			return fmt.Errorf("no run yet")
		}
		run = st.LastRun.Name
		pvbs := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})
		if len(pvbs) != 1 || pvbs[0].Spec.SourcePath != "/pvc/data" {
			var paths []string
			for _, b := range pvbs {
				paths = append(paths, b.Spec.SourcePath)
			}
			return fmt.Errorf("the run's backups are of %v, want /pvc/data only", paths)
		}
		if pvbs[0].Status.Phase == "" || pvbs[0].Status.Phase == v1.RunPending {
			completeBackups(t, e, ctx, pvbs) // the agent's part
		}
		if r := st.LastRun; r.Outcome != v1.RunOutcomeSucceeded || r.VolumesTotal != 1 || r.VolumesCompleted != 1 {
			return fmt.Errorf("last run %+v, want Succeeded with 1 volume", r)
		}
		return nil
	})
	waitPolicyEvent(t, e, ctx, p.Name, ReasonHostPathSkipped, w.ns+"/local (PersistentVolume "+w.ns+"-local)", "--host-path-roots")
}

// With --host-path-roots naming the provisioner's directory, the same claim is backed
// up as any claim: /pvc/local, beside /pvc/data.
func TestAClaimOnAHostPathVolumeUnderTheRootsIsBackedUp(t *testing.T) {
	e := startManagerWith(t, Options{HostPathRoots: hostpath.Roots{localPathRoot}})
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	localPathWorkload(t, w)
	p := newPolicy("local-path-"+w.ns, w.ns)
	p.Annotations = map[string]string{v1.AnnotationRunNow: "first"}
	w.create(p)
	eventually(t, "the run's backups", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if p.Status.SelectedVolumes != 2 || p.Status.SkippedVolumes != 0 || p.Status.LastRun == nil {
			return fmt.Errorf("selected %d, skipped %+v, last run %+v", p.Status.SelectedVolumes, p.Status.Skipped, p.Status.LastRun)
		}
		want := map[string][2]string{w.ns + "/app/local": {"node-a", "/pvc/local"}, w.ns + "/app/data": {"node-a", "/pvc/data"}}
		return checkBackups(backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: p.Status.LastRun.Name}), want, p, p.Status.LastRun.Name)
	})
}
