package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// A run resolves each pod's hooks when it creates the pod's backups and freezes them
// into spec.hooks: the policy hooks whose pods expression matches, in order, or the
// pod's Velero annotations instead of any policy hook. A malformed annotation fails
// the pod's volumes as InvalidHook, naming it. The run does not end before the post
// hooks of every hooked pod were recorded, and a failed hook with onError Fail keeps
// it from Succeeded.
func TestHooksAreFrozenIntoTheBackups(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	w := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	db := w.pod("db-0", "node-a", "", nil, emptyDir("data"), emptyDir("wal"))
	velero := w.pod("velero", "node-a", "", nil, emptyDir("data"))
	bad := w.pod("bad", "node-a", "", nil, emptyDir("data"))
	db.Labels = map[string]string{"app": "db"}
	velero.Annotations = map[string]string{"pre.hook.backup.velero.io/command": `["/bin/sync"]`, "pre.hook.backup.velero.io/timeout": "1m"}
	bad.Annotations = map[string]string{"pre.hook.backup.velero.io/command": `["x"]`, "pre.hook.backup.velero.io/on-error": "Ignore"}
	for _, pod := range []*corev1.Pod{db, velero, bad} {
		if err := e.Client.Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status.Phase = corev1.PodRunning
		if err := e.Client.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	p := newPolicy("hooks-"+w.ns, w.ns)
	p.Spec.Hooks = []v1.BackupHook{
		{Name: "flush", Pods: `pod.metadata.labels[?"app"].orValue("") == "db"`, Container: "app",
			Pre: &v1.HookCommand{Command: []string{"psql", "-c", "CHECKPOINT"}}, Post: &v1.HookCommand{Command: []string{"resume"}, OnError: v1.HookContinue}},
		{Name: "all", Pre: &v1.HookCommand{Command: []string{"all"}}},
	}
	w.create(p)
	eventually(t, "four volumes selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 4 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	setRunNow(t, e, ctx, p.Name, "hooks-1")

	var run string
	var pvbs []v1.PodVolumeBackup
	eventually(t, "the run's backups", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r == nil || r.CreationEndTime == nil {
			return fmt.Errorf("run still creating: %+v", r)
		}
		run = r.Name
		pvbs = backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})
		if len(pvbs) != 3 {
			return fmt.Errorf("%d backups", len(pvbs))
		}
		return nil
	})
	for _, b := range pvbs {
		h := b.Spec.Hooks
		if h == nil || b.Labels[v1.LabelHooks] != "true" {
			t.Fatalf("%s: hooks %+v, label %q", b.Name, h, b.Labels[v1.LabelHooks])
		}
		var pre []string
		for _, x := range h.Pre {
			pre = append(pre, fmt.Sprintf("%s(%s)/%s/%s/%s/%s", x.Name, x.Source, x.Container, strings.Join(x.Command, " "), x.Timeout.Duration, x.OnError))
		}
		got := strings.Join(pre, ", ")
		switch b.Spec.Pod.Name {
		case "db-0":
			want := "flush(flush)/app/psql -c CHECKPOINT/30s/Fail, all(all)/app/all/30s/Fail"
			if got != want || len(h.Post) != 1 || h.Post[0].OnError != v1.HookContinue {
				t.Errorf("db-0 pre hooks %s, want %s; post %+v", got, want, h.Post)
			}
		case "velero":
			want := "pre(annotations)/app//bin/sync/1m0s/Fail"
			if got != want || len(h.Post) != 0 {
				t.Errorf("velero pre hooks %s, want %s (the annotations replace the policy hooks); post %+v", got, want, h.Post)
			}
		default:
			t.Errorf("unexpected backup of pod %s", b.Spec.Pod.Name)
		}
	}
	r := getPolicy(t, e, ctx, p.Name).Status.LastRun
	if failuresOf(r, ReasonInvalidHook) != 1 || !strings.Contains(r.Failures[0].Examples[0],
		`/bad/data: the hooks of pod bad cannot run: annotation pre.hook.backup.velero.io/on-error is "Ignore": it must be Fail or Continue`) {
		t.Fatalf("failures %+v, want bad's volume as InvalidHook naming the annotation", r.Failures)
	}

	// The agent completes the backups: the run waits for the pods' post hooks.
	completeBackups(t, e, ctx, pvbs)
	poke(t, e, ctx, p.Name, "completed")
	eventually(t, "the completions seen", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome != v1.RunOutcomeInProgress || r.VolumesCompleted != 0 {
			return fmt.Errorf("last run %+v, want in progress with no volume counted before the post hooks", r)
		}
		return nil
	})
	// The hook controller records the post hooks; db-0's failed with onError Fail.
	for i := range pvbs {
		b := backupsOf(t, e, ctx, w.ns, client.MatchingLabels{v1.LabelRun: run})[i]
		apimeta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: v1.ConditionPostHooks, Status: metav1.ConditionTrue, Reason: "HooksSucceeded", Message: "ran"})
		if b.Spec.Pod.Name == "db-0" {
			b.Status.Hooks = []v1.HookOutcome{{Name: "all", Stage: v1.HookStagePre, Container: "app", Outcome: v1.HookFailed, OnError: v1.HookFail, Message: "exit 3",
				StartTime: &metav1.Time{Time: time.Now()}}}
		}
		if err := e.Client.Status().Update(ctx, &b); err != nil {
			t.Fatal(err)
		}
	}
	poke(t, e, ctx, p.Name, "post-hooks")
	eventually(t, "the run's outcome", func() error {
		r := getPolicy(t, e, ctx, p.Name).Status.LastRun
		if r.Outcome != v1.RunOutcomePartiallyFailed || r.VolumesCompleted != 3 || r.VolumesFailed != 1 || r.HooksFailed != 1 {
			return fmt.Errorf("last run %+v, want PartiallyFailed: 3 of 4 backed up, 1 InvalidHook, 1 hook failed", r)
		}
		if !strings.HasPrefix(r.Message, "1 hooks with onError Fail failed, first: pre hook all in container app of pod "+w.ns+"/db-0: exit 3") {
			return fmt.Errorf("message %q does not name the failed hook first", r.Message)
		}
		return nil
	})
}

// All the volumes of a pod with hooks start at the same jitter offset, so that they
// are created in one pass and its pre hooks run once before any is read.
func TestJitterIsKeyedOnAHookedPod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0", UID: "u-1"}}
	a := target{pod: pod, volume: "data", sourcePath: "/pod/db-0/data"}
	b := target{pod: pod, volume: "wal", sourcePath: "/pod/db-0/wal"}
	const window = time.Hour
	if jitterOffset(window, "shop", jitterKey(a, true)) != jitterOffset(window, "shop", jitterKey(b, true)) {
		t.Error("the volumes of a hooked pod start at different offsets")
	}
	if jitterOffset(window, "shop", jitterKey(a, false)) == jitterOffset(window, "shop", jitterKey(b, false)) {
		t.Error("the volumes of a pod without hooks start at the same offset (they are spread by source)")
	}
}
