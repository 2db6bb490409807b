package e2e

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/fidelity"
)

// The fidelity story's pod (manifests/fidelity.yaml): one emptyDir per uploader, each
// backed up by its own policy (fidelity-policies.yaml).
const (
	fidelityNamespace = "fidelity"
	fidelityPod       = "tree"
	fidelityRestore   = "tree-from-latest"
)

var fidelityVolumes = []struct {
	volume, policy string
	uploader       backupv1alpha1.Uploader
}{
	{"kopia", "fidelity-kopia", backupv1alpha1.UploaderKopia},
	{"restic", "fidelity-restic", backupv1alpha1.UploaderRestic},
}

// everyFileBackAsItWas: the tree of every awkward case (test/fidelity) is written into
// a pod's emptyDirs, backed up by the agent with each uploader, and restored through
// restore-wait into the pod made again; what comes back differs from what was written
// only as agentKnownDifferences and agentDroppedAttributes say, and the backup's
// status.skipped and the restore's status.notRestored, and their events, count what
// the tree holds that the agent's path cannot keep.
func (s *stories) everyFileBackAsItWas(t *testing.T) {
	ctx := t.Context()
	e := s.e
	if err := e.Apply(ctx, "fidelity.yaml"); err != nil {
		t.Fatal(err)
	}
	pod, err := e.PodIn(ctx, fidelityNamespace, map[string]string{"app": fidelityPod}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The test runs as root on the kubelet's host: it writes the tree straight into the
	// volumes' directories, with owners, device nodes and attributes no pod could make.
	want := map[string]fidelity.Manifest{}
	for _, v := range fidelityVolumes {
		dir := e.emptyDirOf(pod, v.volume)
		left, err := fidelity.Generate(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Fatalf("the generator left cases out of %s, so the story would prove less than it says: %v", dir, left)
		}
		// The generator makes the root 0750, owned by another user and group, as a
		// database's data directory often is: restore-wait (user 65534) may not read
		// it, and need not, as its markers are in a volume of their own.
		if want[v.volume], err = fidelity.Scan(dir); err != nil {
			t.Fatal(err)
		}
	}

	if err := e.Apply(ctx, "fidelity-policies.yaml"); err != nil {
		t.Fatal(err)
	}
	// Both runs at once: the agent moves both volumes in the time of the slower.
	previous := map[string]string{}
	for _, v := range fidelityVolumes {
		if previous[v.policy], err = e.StartRun(ctx, v.policy, "fidelity-1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range fidelityVolumes {
		run, err := e.WaitRunEnded(ctx, v.policy, "fidelity-1", previous[v.policy])
		if err != nil {
			t.Fatal(err)
		}
		b := run.Backup(v.volume)
		if lr := run.Policy.Status.LastRun; lr.Outcome != backupv1alpha1.RunOutcomeSucceeded || len(run.Backups) != 1 || b == nil || b.Spec.Uploader != v.uploader {
			t.Fatalf("%s: run %s %s %q, backups %+v; want one Completed %s backup of volume %s", v.policy, lr.Name, lr.Outcome, lr.Message, run.Backups, v.uploader, v.volume)
		}
		wantSkipped := skippedByTheAgent(want[v.volume])
		if got := fmt.Sprintf("%+v", b.Status.Skipped); got != fmt.Sprintf("%+v", wantSkipped) {
			t.Errorf("%s: status.skipped %s, want %s", v.volume, got, fmt.Sprintf("%+v", wantSkipped))
		}
		if err := e.waitEvent(ctx, fidelityNamespace, b.Name, "EntriesSkipped", corev1.EventTypeNormal, "the snapshot left out 1 socket (status.skipped)"); err != nil {
			t.Errorf("%s: %v", v.volume, err)
		}
	}
	if t.Failed() {
		return
	}

	e.Log("deleting pod %s/%s, and its emptyDirs with it; restoring them into the pod made again", fidelityNamespace, fidelityPod)
	if _, err := e.Kubectl(ctx, "", "-n", fidelityNamespace, "delete", "pod", fidelityPod, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, "fidelity-restore.yaml"); err != nil {
		t.Fatal(err)
	}
	// A bare pod created before its restore has read the store is let go without its
	// data (nothing would create it again with restore-wait; docs/restore.md): the
	// story creates it once the restore holds new pods, as a user of bare pods must.
	if err := e.WaitRestoreReadyForPods(ctx, fidelityNamespace, fidelityRestore, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, "fidelity.yaml"); err != nil {
		t.Fatal(err)
	}
	vr, err := e.WaitRestoreIn(ctx, fidelityNamespace, fidelityRestore)
	if err != nil {
		t.Fatal(err)
	}
	pod, err = e.PodIn(ctx, fidelityNamespace, map[string]string{"app": fidelityPod}, 2*time.Minute)
	if err != nil {
		logs, _ := e.Kubectl(ctx, "", "-n", fidelityNamespace, "logs", fidelityPod, "-c", restorewait.ContainerName, "--previous")
		t.Fatalf("%v\nrestore-wait's log:\n%s", err, logs)
	}
	if st := pod.Status.InitContainerStatuses; len(st) == 0 || !strings.HasPrefix(st[0].Name, restorewait.ContainerName) ||
		st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
		t.Errorf("pod %s did not wait in restore-wait, or restore-wait did not exit 0: %+v", pod.Name, st)
	}
	pvrs := map[string]string{}
	for _, vs := range vr.Status.Volumes {
		if vs.Pod == pod.Name && vs.Phase == backupv1alpha1.RunCompleted {
			pvrs[vs.Volume] = vs.PodVolumeRestore
		}
	}

	for _, v := range fidelityVolumes {
		t.Run(string(v.uploader), func(t *testing.T) {
			src := want[v.volume]
			got, err := fidelity.Scan(e.emptyDirOf(pod, v.volume))
			if err != nil {
				t.Fatal(err)
			}
			src, dropped := withoutDroppedAttributes(t, src, got)
			diffs := fidelity.Compare(src, got)
			for _, d := range diffs {
				t.Logf("%s", d)
			}
			unknown, stale := fidelity.Check(diffs, agentKnownDifferences(v.uploader), src)
			for _, d := range unknown {
				t.Errorf("difference not on the known list: %s", d)
			}
			for _, k := range stale {
				t.Errorf("known difference %q %s (%s) no longer occurs: remove it from the list and from docs/agent.md", k.Path, k.Field, k.Why)
			}

			pvr := &backupv1alpha1.PodVolumeRestore{}
			if err := e.Client.Get(ctx, client.ObjectKey{Namespace: fidelityNamespace, Name: pvrs[v.volume]}, pvr); err != nil {
				t.Fatalf("the PodVolumeRestore of volume %s (%q): %v", v.volume, pvrs[v.volume], err)
			}
			wantNotRestored := notRestoredByTheAgent(want[v.volume], v.uploader, dropped)
			if got, want := fmt.Sprintf("%+v", pvr.Status.NotRestored), fmt.Sprintf("%+v", wantNotRestored); got != want {
				t.Errorf("%s: status.notRestored %s, want %s", pvr.Name, got, want)
			}
			msg := "the restore did not give back 1 device node, 1 extended attribute (status.notRestored)"
			if wantNotRestored.FIFOs == 1 {
				msg = "the restore did not give back 1 FIFO, 1 device node, 1 extended attribute (status.notRestored)"
			}
			if err := e.waitEvent(ctx, fidelityNamespace, pvr.Name, "EntriesNotRestored", corev1.EventTypeWarning, msg); err != nil {
				t.Error(err)
			}
		})
	}
}

// emptyDirOf is the directory of pod's emptyDir volume on the node, where the kubelet
// (and so the agent) has it.
func (e *Env) emptyDirOf(pod *corev1.Pod, volume string) string {
	return filepath.Join(e.Cluster.KubeletRoot, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", volume)
}

// waitEvent waits for an event of reason and type on the object name in ns whose
// message is msg (the agent records events asynchronously).
func (e *Env) waitEvent(ctx context.Context, ns, name, reason, eventType, msg string) error {
	var seen []string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := e.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name != name || ev.Reason != reason {
				continue
			}
			if ev.Type == eventType && ev.Message == msg {
				return true, nil
			}
			seen = append(seen, ev.Type+" "+ev.Message)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("no %s event %s %q on %s (seen: %q): %w", eventType, reason, msg, name, seen, err)
	}
	return nil
}

// skippedByTheAgent is what a backup by the agent leaves out of the tree m, with either
// uploader: its sockets. FIFOs and device nodes are stored (kopia in Holdfast's list of
// special files); nothing vanishes, as nothing writes into the volume.
func skippedByTheAgent(m fidelity.Manifest) *backupv1alpha1.SkippedEntries {
	var s backupv1alpha1.SkippedEntries
	for _, e := range m {
		if e.Type == "socket" {
			s.Sockets++
		}
	}
	return &s
}

// notRestoredByTheAgent is what a restore by the agent counts as not given back of the
// tree m: its device nodes (the data mover has no CAP_MKNOD; restic's stream has no
// device numbers anyway), the attributes the mover's privileges refuse, and with
// restic the FIFOs whose names are not UTF-8 (restic ls garbles them).
func notRestoredByTheAgent(m fidelity.Manifest, uploader backupv1alpha1.Uploader, refused int64) *backupv1alpha1.NotRestoredEntries {
	n := backupv1alpha1.NotRestoredEntries{Attributes: refused}
	for p, e := range m {
		switch {
		case e.Type == "chardev" || e.Type == "blockdev":
			n.Devices++
		case e.Type == "fifo" && uploader == backupv1alpha1.UploaderRestic && !utf8.ValidString(p):
			n.FIFOs++
		}
	}
	return &n
}

// droppedAttribute is an extended attribute of one entry of the tree that the agent's
// path does not give back, and why. The entry's other attributes must come back.
type droppedAttribute struct {
	path, name, why string
	// refused says that the restore tried and counts it in status.notRestored.attributes;
	// otherwise the backup never saw it.
	refused bool
}

var agentDroppedAttributes = []droppedAttribute{
	{fidelity.CapFile, "security.capability", "the data mover keeps no CAP_SETFCAP, which setting a file capability takes: refused and counted", true},
	{fidelity.XattrFile, "trusted.overlay.opaque", "the data mover keeps no CAP_SYS_ADMIN, without which the kernel does not even list trusted.* attributes: not backed up, not counted", false},
}

// withoutDroppedAttributes returns want without agentDroppedAttributes, and how many of
// them the restore counts as refused. It fails the test for an attribute the tree lacks
// (the list would prove nothing) or that came back (a fix landed: shrink the list).
func withoutDroppedAttributes(t *testing.T, want, got fidelity.Manifest) (fidelity.Manifest, int64) {
	t.Helper()
	out := maps.Clone(want)
	var refused int64
	for _, d := range agentDroppedAttributes {
		w, ok := out[d.path]
		if _, has := w.Xattrs[d.name]; !ok || !has {
			t.Errorf("the tree has no attribute %s on %q to drop", d.name, d.path)
			continue
		}
		if _, back := got[d.path].Xattrs[d.name]; back {
			t.Errorf("attribute %s of %q came back although the list says (%s): remove it from agentDroppedAttributes and from docs/agent.md", d.name, d.path, d.why)
		}
		w.Xattrs = maps.Clone(w.Xattrs)
		delete(w.Xattrs, d.name)
		if len(w.Xattrs) == 0 {
			w.Xattrs = nil
		}
		out[d.path] = w
		if d.refused {
			refused++
		}
	}
	return out, refused
}

// agentKnownDifferences are what a restore through the agent does not give back of the
// tree, per uploader, beyond agentDroppedAttributes: the integration test's list
// (fidelity.KnownDifferences, the same uploader outside the agent's jail) and, for
// kopia, the device node that the data mover may not make (restic's restore never
// makes one: already on its list). restore-wait adds nothing: the agent tells it in
// the pod's marker volume, not in the restored volume.
// docs/agent.md ("What is preserved") says the same.
func agentKnownDifferences(uploader backupv1alpha1.Uploader) []fidelity.Known {
	out := fidelity.KnownDifferences(string(uploader))
	if uploader == backupv1alpha1.UploaderKopia {
		out = append(out, fidelity.Known{Path: fidelity.CharDev, Field: "missing",
			Why: "backed up with its number, but the data mover keeps no CAP_MKNOD: counted as not restored"})
	}
	return out
}
