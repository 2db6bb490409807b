package hooks

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// runningPod creates a pod with a container db, a native sidecar and, as the kubelet
// would report them, every container running.
func runningPod(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-0"},
		Spec: corev1.PodSpec{
			NodeName:       "node-1",
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "busybox", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "db", Image: "busybox"}},
		},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "sidecar", State: running}},
		ContainerStatuses:     []corev1.ContainerStatus{{Name: "db", State: running}}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// hookedBackups creates the backups of the pod's volumes, as the policy controller
// does for a pod with hooks, Pending as the agent leaves them while it waits.
func hookedBackups(t *testing.T, pod *corev1.Pod, hooks *v1.ResolvedHooks, volumes ...string) []client.ObjectKey {
	t.Helper()
	var keys []client.ObjectKey
	for _, vol := range volumes {
		b := &v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: "run1-" + vol,
				Labels: map[string]string{v1.LabelRun: "run1", v1.LabelHooks: "true"}},
			Spec: v1.PodVolumeBackupSpec{Node: pod.Spec.NodeName, Pod: v1.PodReference{Name: pod.Name, UID: string(pod.UID)},
				Volume: vol, SourcePath: "/pod/" + pod.Name + "/" + vol, StorageLocation: "default", Repository: "default-kopia",
				Uploader: v1.UploaderKopia, Hooks: hooks},
		}
		if err := env.Client.Create(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, client.ObjectKeyFromObject(b))
	}
	return keys
}

func hook(name, container string, onError v1.HookOnError, command ...string) v1.ResolvedHook {
	return v1.ResolvedHook{Name: name, Source: name, Container: container, Command: command,
		Timeout: metav1.Duration{Duration: 5 * time.Second}, OnError: onError}
}

// finish stands in for the agent: it ends the backup in phase.
func finish(t *testing.T, key client.ObjectKey, phase v1.RunPhase) {
	t.Helper()
	testenv.Eventually(t, "backup "+key.Name+" "+string(phase), func() error {
		b := &v1.PodVolumeBackup{}
		if err := env.Client.Get(context.Background(), key, b); err != nil {
			return err
		}
		b.Status.Phase = phase
		b.Status.CompletionTime = &metav1.Time{Time: time.Now()}
		return env.Client.Status().Update(context.Background(), b)
	})
}

// waitCondition waits for the condition on the backup and returns the backup.
func waitCondition(t *testing.T, key client.ObjectKey, condType string) *v1.PodVolumeBackup {
	t.Helper()
	b := &v1.PodVolumeBackup{}
	testenv.Eventually(t, condType+" on "+key.Name, func() error {
		if err := env.Client.Get(context.Background(), key, b); err != nil {
			return err
		}
		if apimeta.FindStatusCondition(b.Status.Conditions, condType) == nil {
			return fmt.Errorf("no %s condition yet: %+v", condType, b.Status)
		}
		return nil
	})
	return b
}

func outcomes(b *v1.PodVolumeBackup) []string {
	var out []string
	for _, h := range b.Status.Hooks {
		out = append(out, fmt.Sprintf("%s/%s/%s", h.Stage, h.Name, h.Outcome))
	}
	return out
}

// A pre hook with onError Fail that fails: every volume of the pod ends Failed with
// reason HookFailed without being read, and the post hook still runs (it usually
// undoes the pre hook; Velero #8159), once.
func TestFailingPreHookFailsTheVolumesAndPostStillRuns(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	pod := runningPod(t, ns)
	keys := hookedBackups(t, pod, &v1.ResolvedHooks{
		Pre:  []v1.ResolvedHook{hook("freeze", "db", v1.HookFail, "fail", "1", "database is locked"), hook("never", "db", v1.HookFail, "never")},
		Post: []v1.ResolvedHook{hook("thaw", "db", v1.HookFail, "thaw")},
	}, "data", "wal")

	for _, key := range keys {
		b := waitCondition(t, key, v1.ConditionPostHooks)
		want := "pre hook freeze in container db failed: exit 1: database is locked; the volume was not backed up"
		if b.Status.Phase != v1.RunFailed || b.Status.Message != want || b.Status.CompletionTime == nil {
			t.Errorf("%s: phase %s, message %q; want Failed with %q", key.Name, b.Status.Phase, b.Status.Message, want)
		}
		if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionStalled); c == nil || c.Reason != v1.ReasonHookFailed {
			t.Errorf("%s: Stalled = %+v, want reason HookFailed", key.Name, c)
		}
		if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPreHooks); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonHookFailed {
			t.Errorf("%s: PreHooks = %+v, want False HookFailed", key.Name, c)
		}
		if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPostHooks); c.Status != metav1.ConditionTrue || c.Message != "the post hook ran" {
			t.Errorf("%s: PostHooks = %+v, want True, \"the post hook ran\"", key.Name, c)
		}
		if got, want := outcomes(b), []string{"Pre/freeze/Failed", "Post/thaw/Succeeded"}; !slices.Equal(got, want) {
			t.Errorf("%s: outcomes %v, want %v", key.Name, got, want)
		}
		for _, h := range b.Status.Hooks {
			if h.StartTime == nil || h.CompletionTime == nil {
				t.Errorf("%s: hook %s %s has no start or completion time", key.Name, h.Stage, h.Name)
			}
		}
	}
	if got, want := execs.commands(ns), []string{"db: fail 1 database is locked", "db: thaw"}; !slices.Equal(got, want) {
		t.Errorf("commands run %q, want %q (the pre hook after the failed one is not run, the post hook runs once)", got, want)
	}
	// The failure is also an event on the pod, where its owner looks.
	testenv.Eventually(t, "a HookFailed event on the pod", func() error {
		var list eventsv1.EventList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "Pod" && ev.Regarding.Name == pod.Name && ev.Reason == v1.ReasonHookFailed &&
				strings.Contains(ev.Note, "pre hook freeze in container db of pod db-0 failed (onError Fail): exit 1: database is locked") {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
}

// A pre hook with onError Continue that fails is recorded and the backups go on; the
// post hook waits until every volume of the pod finished, also when one failed.
func TestContinuePreHookAndPostAfterEveryVolume(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	pod := runningPod(t, ns)
	keys := hookedBackups(t, pod, &v1.ResolvedHooks{
		Pre:  []v1.ResolvedHook{hook("flush", "db", v1.HookContinue, "fail", "2", "flush failed")},
		Post: []v1.ResolvedHook{hook("resume", "sidecar", v1.HookFail, "resume")},
	}, "data", "wal")

	for _, key := range keys {
		b := waitCondition(t, key, v1.ConditionPreHooks)
		if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPreHooks); c.Status != metav1.ConditionTrue || c.Message != "the pre hook ran" {
			t.Errorf("%s: PreHooks = %+v, want True (the failure had onError Continue), \"the pre hook ran\"", key.Name, c)
		}
		if b.Status.Phase == v1.RunFailed {
			t.Errorf("%s failed: %s", key.Name, b.Status.Message)
		}
		if len(b.Status.Hooks) != 1 || b.Status.Hooks[0].Outcome != v1.HookFailed || !strings.Contains(b.Status.Hooks[0].Message, "exit 2: flush failed") {
			t.Errorf("%s: outcomes %+v, want the failed flush with its exit code and output", key.Name, b.Status.Hooks)
		}
	}

	finish(t, keys[0], v1.RunCompleted)
	// The first volume finished, the second not: a pass over the pod, run here
	// directly so that the test does not depend on when the manager's runs, must
	// not run the post hook.
	direct := &recordingExecutor{calls: map[string][]execCall{}}
	r := &HookReconciler{Client: env.Client, APIReader: env.Client, Executor: direct, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: "run1/" + string(pod.UID)}}); err != nil {
		t.Fatal(err)
	}
	if got := append(direct.commands(ns), execs.commands(ns)...); slices.Contains(got, "sidecar: resume") {
		t.Fatalf("the post hook ran before every volume of the pod finished: %q", got)
	}
	finish(t, keys[1], v1.RunFailed)
	for _, key := range keys {
		b := waitCondition(t, key, v1.ConditionPostHooks)
		if c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPostHooks); c.Status != metav1.ConditionTrue || c.Message != "the post hook ran" {
			t.Errorf("%s: PostHooks = %+v, want True, \"the post hook ran\"", key.Name, c)
		}
	}
	if got, want := execs.commands(ns), []string{"db: fail 2 flush failed", "sidecar: resume"}; !slices.Equal(got, want) {
		t.Errorf("commands run %q, want %q", got, want)
	}
}

// The post hook of a pod that is gone is not run, and PostHooks says so.
func TestPostHookOfAGonePod(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	pod := runningPod(t, ns)
	keys := hookedBackups(t, pod, &v1.ResolvedHooks{
		Pre:  []v1.ResolvedHook{hook("freeze", "db", v1.HookFail, "freeze")},
		Post: []v1.ResolvedHook{hook("thaw", "db", v1.HookFail, "thaw")},
	}, "data")
	waitCondition(t, keys[0], v1.ConditionPreHooks)
	if err := env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the pod to be gone", func() error {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
		if client.IgnoreNotFound(err) != nil || err == nil {
			return fmt.Errorf("pod still there (%v)", err)
		}
		return nil
	})
	finish(t, keys[0], v1.RunCanceled)
	b := waitCondition(t, keys[0], v1.ConditionPostHooks)
	c := apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPostHooks)
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonPodGone || c.Message != "pod db-0 is gone; post hook not run" {
		t.Errorf("PostHooks = %+v, want False PodGone \"pod db-0 is gone; post hook not run\"", c)
	}
	if got, want := execs.commands(ns), []string{"db: freeze"}; !slices.Equal(got, want) {
		t.Errorf("commands run %q, want %q", got, want)
	}
}

// A hook whose container is not running fails with a sentence saying so, and a hook
// that outlives its timeout fails as timed out.
func TestHookContainerNotRunningAndTimeout(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	pod := runningPod(t, ns)
	pod.Status.InitContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	if err := env.Client.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	hang := hook("slow", "db", v1.HookContinue, "hang")
	hang.Timeout.Duration = 200 * time.Millisecond
	keys := hookedBackups(t, pod, &v1.ResolvedHooks{
		Pre: []v1.ResolvedHook{hang, hook("quiesce", "sidecar", v1.HookFail, "quiesce")},
	}, "data")
	b := waitCondition(t, keys[0], v1.ConditionPreHooks)
	if got := outcomes(b); !slices.Equal(got, []string{"Pre/slow/Failed", "Pre/quiesce/Failed"}) {
		t.Fatalf("outcomes %v", got)
	}
	if m := b.Status.Hooks[0].Message; !strings.HasPrefix(m, "timed out after 200ms") {
		t.Errorf("timeout message %q", m)
	}
	if want := "pre hook quiesce in container sidecar failed: container sidecar of pod db-0 is not running; the volume was not backed up"; b.Status.Message != want {
		t.Errorf("message %q, want %q", b.Status.Message, want)
	}
	if got, want := execs.commands(ns), []string{"db: hang"}; !slices.Equal(got, want) {
		t.Errorf("commands run %q, want %q (nothing is run in a container that is not running)", got, want)
	}
}

// The manager may exec into pods (create and get on pods/exec: SPDY posts, WebSocket
// gets); the agent may not, on any node.
func TestOnlyTheManagerMayExec(t *testing.T) {
	e := testenv.Require(t, env)
	for _, tt := range []struct {
		sa   string
		verb string
		want bool
	}{
		{testenv.ManagerServiceAccount, "create", true},
		{testenv.ManagerServiceAccount, "get", true},
		{testenv.AgentServiceAccount, "create", false},
		{testenv.AgentServiceAccount, "get", false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + testenv.OperatorNamespace + ":" + tt.sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + testenv.OperatorNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "app", Verb: tt.verb, Resource: "pods", Subresource: "exec"},
		}}
		if err := e.Client.Create(context.Background(), sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tt.want {
			t.Errorf("%s %s pods/exec: allowed = %v, want %v", tt.sa, tt.verb, sar.Status.Allowed, tt.want)
		}
	}
}
