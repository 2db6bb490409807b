package e2e

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The partial-restore story's objects (manifests/partial*.yaml).
const (
	partialNamespace = "notes"
	partialRestore   = "notes-2026"
	partialDir       = "notes/2026"
)

var partialVolumes = []struct{ volume, policy string }{
	{"kopia", "notes-kopia"},
	{"restic", "notes-restic"},
}

// sumsOf is sha256sum of every file below dir in the notes pod, except what find's
// extra arguments leave out, in a stable order.
func (s *stories) sumsOf(ctx context.Context, dir string, findArgs string) (string, error) {
	return s.e.Kubectl(ctx, "", "-n", partialNamespace, "exec", "notes", "--", "sh", "-c",
		"cd "+dir+" && find . -type f "+findArgs+" | sort | xargs sha256sum")
}

// oneDirectoryBackIntoARunningPod: a directory deleted by mistake in a running pod is
// given back by a VolumeRestore with runningPods: Overwrite and paths: [it], with each
// uploader: its files come back byte for byte, and the volume's other files, changed
// on purpose after the backup, stay as they are; the pod is not restarted.
func (s *stories) oneDirectoryBackIntoARunningPod(t *testing.T) {
	ctx := t.Context()
	e := s.e
	t.Cleanup(func() { s.removePartial(t) })
	// Alone, the story may start before the manager's webhook serves the policies.
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		last = e.Apply(ctx, "partial.yaml")
		return last == nil, nil
	}); err != nil {
		t.Fatalf("applying partial.yaml: %v (%v)", err, last)
	}
	pod, err := e.PodIn(ctx, partialNamespace, map[string]string{"app": "notes"}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, v := range partialVolumes {
		script := "cd /" + v.volume + " && mkdir -p notes/2026/march notes/2025 && " +
			"head -c 300000 /dev/urandom > notes/2026/january.txt && head -c 5000 /dev/urandom > notes/2026/march/12.txt && " +
			"echo idea > notes/2025/old.txt && echo v1 > settings.conf"
		if _, err := e.Kubectl(ctx, "", "-n", partialNamespace, "exec", "notes", "--", "sh", "-c", script); err != nil {
			t.Fatal(err)
		}
		if want[v.volume], err = s.sumsOf(ctx, "/"+v.volume+"/"+partialDir, ""); err != nil {
			t.Fatal(err)
		}
	}
	previous := map[string]string{}
	for _, v := range partialVolumes {
		if previous[v.policy], err = e.StartRun(ctx, v.policy, "notes-1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range partialVolumes {
		run, err := e.WaitRunEnded(ctx, v.policy, "notes-1", previous[v.policy])
		if err != nil {
			t.Fatal(err)
		}
		if lr := run.Policy.Status.LastRun; lr.Outcome != backupv1alpha1.RunOutcomeSucceeded || run.Backup(v.volume) == nil {
			t.Fatalf("%s: run %s %s %q; want one Completed backup of volume %s", v.policy, lr.Name, lr.Outcome, lr.Message, v.volume)
		}
	}

	e.Log("deleting %s in the running pod, and changing other files on purpose", partialDir)
	others := map[string]string{}
	for _, v := range partialVolumes {
		script := "cd /" + v.volume + " && rm -rf " + partialDir + " && echo v2 > settings.conf && echo newer > notes/2025/old.txt && echo new > notes/later.txt"
		if _, err := e.Kubectl(ctx, "", "-n", partialNamespace, "exec", "notes", "--", "sh", "-c", script); err != nil {
			t.Fatal(err)
		}
		if others[v.volume], err = s.sumsOf(ctx, "/"+v.volume, "-not -path './"+partialDir+"/*' -not -path './.holdfast/*'"); err != nil {
			t.Fatal(err)
		}
	}

	if err := e.Apply(ctx, "partial-restore.yaml"); err != nil {
		t.Fatal(err)
	}
	vr, err := e.WaitRestoreIn(ctx, partialNamespace, partialRestore)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.show(ctx, "The partial restore, as kubectl describe tells it:", "-n", partialNamespace, "describe", "vr", partialRestore); err != nil {
		t.Error(err)
	}
	if vr.Status.VolumesCompleted != 2 || len(vr.Status.Volumes) != 2 {
		t.Errorf("VolumeRestore status %+v; want both volumes Completed", vr.Status)
	}
	for _, st := range vr.Status.Volumes {
		if !reflect.DeepEqual(st.Paths, []string{partialDir}) {
			t.Errorf("status of volume %s: paths %q, want [%s]", st.Volume, st.Paths, partialDir)
		}
	}
	for _, v := range partialVolumes {
		got, err := s.sumsOf(ctx, "/"+v.volume+"/"+partialDir, "")
		if err != nil {
			t.Fatal(err)
		}
		if got != want[v.volume] {
			t.Errorf("%s: %s after the restore:\n%s\nwant\n%s", v.volume, partialDir, got, want[v.volume])
		}
		rest, err := s.sumsOf(ctx, "/"+v.volume, "-not -path './"+partialDir+"/*' -not -path './.holdfast/*'")
		if err != nil {
			t.Fatal(err)
		}
		if rest != others[v.volume] {
			t.Errorf("%s: the files outside %s changed:\n%s\nwant them as they were before the restore\n%s", v.volume, partialDir, rest, others[v.volume])
		}
		if !strings.Contains(rest, "settings.conf") {
			t.Errorf("%s: settings.conf is not in %s", v.volume, rest)
		}
	}
	now, err := e.PodIn(ctx, partialNamespace, map[string]string{"app": "notes"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if now.UID != pod.UID || now.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the notes pod was disturbed: uid %s (was %s), restarts %d", now.UID, pod.UID, now.Status.ContainerStatuses[0].RestartCount)
	}
}

func (s *stories) removePartial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.e.DeleteNamespace(ctx, partialNamespace); err != nil {
		t.Errorf("removing the story's namespace: %v", err)
	}
	if _, err := s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "vbp/notes-kopia", "vbp/notes-restic"); err != nil {
		t.Errorf("removing the story's policies: %v", err)
	}
}
