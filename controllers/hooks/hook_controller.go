package hooks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
)

// Reasons of the PreHooks and PostHooks conditions and of the hook events.
const (
	ReasonHookFailed     = v1.ReasonHookFailed
	ReasonHooksSucceeded = v1.ReasonHooksSucceeded
	// ReasonPodGone: the pod was gone when its post hooks were due.
	ReasonPodGone = "PodGone"
	// ReasonHookRan, on events: one hook ran.
	ReasonHookRan = "HookSucceeded"
)

// maxMessage bounds a hook outcome's message (the API allows 2048).
const maxMessage = 1024

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// Exec over WebSocket is a GET (get), over SPDY a POST (create), and the API server
// also checks create for the WebSocket upgrade: with either verb alone every hook is
// forbidden (measured in test/e2e).
// +kubebuilder:rbac:groups="",resources=pods/exec,verbs=create;get
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch

// HookReconciler runs the hooks of the PodVolumeBackups labelled backup.holdfast.dev/hooks,
// one pod of one run at a time: the pre hooks before the agent reads any of the pod's
// volumes (the agent waits for the PreHooks condition), the post hooks once every
// one of them finished, whatever the outcome. It records the outcomes, and the
// PreHooks and PostHooks conditions, on every backup of the pod.
type HookReconciler struct {
	client.Client
	// APIReader lists the pod's backups from the API server before a hook runs: a
	// cache behind this controller's own writes would run a hook twice.
	APIReader client.Reader
	Executor  Executor
	Recorder  events.EventRecorder
	// Clock is the time source; nil is the real clock.
	Clock clock.PassiveClock
	// MaxConcurrent is how many pods' hooks run at once (4 when zero).
	MaxConcurrent int
}

// SetupWithManager registers the controller. Requests are per pod of a run
// (groupKey), so that two backups of one pod never run its hooks concurrently.
func (r *HookReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.MaxConcurrent == 0 {
		r.MaxConcurrent = 4
	}
	hooked, err := predicate.LabelSelectorPredicate(metav1.LabelSelector{MatchLabels: map[string]string{v1.LabelHooks: "true"}})
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("hooks").
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrent}).
		Watches(&v1.PodVolumeBackup{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			b, ok := o.(*v1.PodVolumeBackup)
			if !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: groupKey(b)}}
		}), builder.WithPredicates(hooked)).
		Complete(r)
}

// groupKey names the backups of one pod in one run: <namespace>/<run>/<pod UID>.
func groupKey(b *v1.PodVolumeBackup) types.NamespacedName {
	return types.NamespacedName{Namespace: b.Namespace, Name: b.Labels[v1.LabelRun] + "/" + b.Spec.Pod.UID}
}

// group is the backups of one pod in one run, in name order, and what they share.
type group struct {
	namespace, run, podUID string
	backups                []v1.PodVolumeBackup
	// hooks and pod are those of the first backup; all were created in the same pass.
	hooks *v1.ResolvedHooks
	pod   v1.PodReference
}

// Reconcile runs the pre hooks of a pod whose backups have none recorded yet, the
// post hooks of one whose backups all finished, and copies a recorded stage onto a
// backup of the pod that lacks it.
func (r *HookReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	i := strings.LastIndex(req.Name, "/")
	if i < 0 {
		return ctrl.Result{}, nil
	}
	g := &group{namespace: req.Namespace, run: req.Name[:i], podUID: req.Name[i+1:]}
	// Most events are the agent's progress writes: the cache tells there is nothing
	// to do without a request to the API server.
	if err := r.readGroup(ctx, r.Client, g); err != nil || !g.needsWork() {
		return ctrl.Result{}, err
	}
	if err := r.readGroup(ctx, r.APIReader, g); err != nil || len(g.backups) == 0 {
		return ctrl.Result{}, err
	}
	log := ctrl.LoggerFrom(ctx).WithValues("pod", g.namespace+"/"+g.pod.Name, "run", g.run)
	ctx = ctrl.LoggerInto(ctx, log)
	if err := r.reconcilePre(ctx, g); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.reconcilePost(ctx, g)
}

// needsWork reports whether a stage is due or a recorded stage is missing on a backup
// of the pod.
func (g *group) needsWork() bool {
	if len(g.backups) == 0 {
		return false
	}
	allFinished := true
	for _, b := range g.backups {
		allFinished = allFinished && finished(b.Status.Phase)
	}
	for _, b := range g.backups {
		if len(g.hooks.Pre) > 0 && apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPreHooks) == nil && !finished(b.Status.Phase) {
			return true
		}
		if allFinished && apimeta.FindStatusCondition(b.Status.Conditions, v1.ConditionPostHooks) == nil {
			return true
		}
	}
	return false
}

// readGroup lists the pod's backups of the run with reader: the cache to see whether
// there is work, the API server before any hook runs.
func (r *HookReconciler) readGroup(ctx context.Context, reader client.Reader, g *group) error {
	var list v1.PodVolumeBackupList
	if err := reader.List(ctx, &list, client.InNamespace(g.namespace),
		client.MatchingLabels{v1.LabelRun: g.run, v1.LabelHooks: "true"}); err != nil {
		return fmt.Errorf("listing the backups of run %s in %s: %w", g.run, g.namespace, err)
	}
	g.backups = g.backups[:0]
	for _, b := range list.Items {
		if b.Spec.Pod.UID == g.podUID && b.Spec.Hooks != nil && b.DeletionTimestamp.IsZero() {
			g.backups = append(g.backups, b)
		}
	}
	sort.Slice(g.backups, func(i, j int) bool { return g.backups[i].Name < g.backups[j].Name })
	if len(g.backups) > 0 {
		g.hooks, g.pod = g.backups[0].Spec.Hooks, g.backups[0].Spec.Pod
	}
	return nil
}

// stageRecord is what a stage left on one backup of the group: its condition and its
// outcomes.
func stageRecord(g *group, condType string, stage v1.HookStage) (*metav1.Condition, []v1.HookOutcome) {
	for _, b := range g.backups {
		if c := apimeta.FindStatusCondition(b.Status.Conditions, condType); c != nil {
			var outs []v1.HookOutcome
			for _, h := range b.Status.Hooks {
				if h.Stage == stage {
					outs = append(outs, h)
				}
			}
			return c, outs
		}
	}
	return nil, nil
}

// reconcilePre runs the pre hooks once, unless a backup of the pod already records
// them, and sets PreHooks on every backup of the pod; a failed pre hook with onError
// Fail fails the backups that have not started. A pod without pre hooks has no
// PreHooks condition.
func (r *HookReconciler) reconcilePre(ctx context.Context, g *group) error {
	if len(g.hooks.Pre) == 0 {
		return nil
	}
	cond, outs := stageRecord(g, v1.ConditionPreHooks, v1.HookStagePre)
	if cond == nil {
		pending := false
		for _, b := range g.backups {
			pending = pending || !finished(b.Status.Phase)
		}
		if !pending {
			return nil // every backup ended before its pre hooks (canceled, stranded)
		}
		var failure string
		outs, failure = r.runStage(ctx, g, v1.HookStagePre, g.hooks.Pre)
		c := metav1.Condition{Type: v1.ConditionPreHooks, Status: metav1.ConditionTrue, Reason: ReasonHooksSucceeded,
			Message: hooksRan(len(g.hooks.Pre), "pre")}
		if failure != "" {
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonHookFailed, failure+"; the volume was not backed up"
		}
		cond = &c
	}
	return r.record(ctx, g, *cond, outs, v1.HookStagePre)
}

// hooksRan is the message of a stage whose n hooks ran: "the pre hook ran", "the 2
// pre hooks ran".
func hooksRan(n int, stage string) string {
	if n == 1 {
		return "the " + stage + " hook ran"
	}
	return fmt.Sprintf("the %d %s hooks ran", n, stage)
}

// reconcilePost runs the post hooks once every backup of the pod finished (also when
// some failed, or a pre hook failed: a post hook usually undoes its pre hook), and
// sets PostHooks on every backup of the pod.
func (r *HookReconciler) reconcilePost(ctx context.Context, g *group) error {
	for _, b := range g.backups {
		if !finished(b.Status.Phase) {
			return nil // the backups' watch brings the pod back
		}
	}
	cond, outs := stageRecord(g, v1.ConditionPostHooks, v1.HookStagePost)
	if cond == nil {
		c := metav1.Condition{Type: v1.ConditionPostHooks, Status: metav1.ConditionTrue, Reason: ReasonHooksSucceeded}
		switch _, gone := r.livePod(ctx, g); {
		case len(g.hooks.Post) == 0:
			c.Message = "the pod has no post hooks"
		case gone != "":
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonPodGone, gone+"; post hook not run"
			r.eventAll(g, corev1.EventTypeWarning, ReasonPodGone, c.Message)
		default:
			var failure string
			outs, failure = r.runStage(ctx, g, v1.HookStagePost, g.hooks.Post)
			c.Message = hooksRan(len(g.hooks.Post), "post")
			if failure != "" {
				c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonHookFailed, failure
			}
		}
		cond = &c
	}
	return r.record(ctx, g, *cond, outs, v1.HookStagePost)
}

// livePod is the pod of the group, or why it is gone.
func (r *HookReconciler) livePod(ctx context.Context, g *group) (*corev1.Pod, string) {
	pod := &corev1.Pod{}
	err := r.Get(ctx, client.ObjectKey{Namespace: g.namespace, Name: g.pod.Name}, pod)
	switch {
	case apierrors.IsNotFound(err), err == nil && string(pod.UID) != g.pod.UID:
		return nil, fmt.Sprintf("pod %s is gone", g.pod.Name)
	case err != nil:
		return nil, fmt.Sprintf("pod %s could not be read: %v", g.pod.Name, err)
	case !pod.DeletionTimestamp.IsZero():
		return nil, fmt.Sprintf("pod %s is being deleted", g.pod.Name)
	}
	return pod, ""
}

// runStage runs the hooks of a stage in order and returns their outcomes, and the
// sentence of the first hook with onError Fail that failed ("" if none). A failed pre
// hook with Fail stops the stage; post hooks all run, each undoing its own pre hook.
func (r *HookReconciler) runStage(ctx context.Context, g *group, stage v1.HookStage, hooks []v1.ResolvedHook) ([]v1.HookOutcome, string) {
	var outs []v1.HookOutcome
	failure := ""
	for _, h := range hooks {
		o := r.runHook(ctx, g, stage, h)
		outs = append(outs, o)
		what := fmt.Sprintf("%s hook %s in container %s of pod %s", strings.ToLower(string(stage)), h.Name, h.Container, g.pod.Name)
		if o.Outcome == v1.HookSucceeded {
			r.eventAll(g, corev1.EventTypeNormal, ReasonHookRan, what+" succeeded")
			continue
		}
		r.eventAll(g, corev1.EventTypeWarning, ReasonHookFailed, fmt.Sprintf("%s failed (onError %s): %s", what, h.OnError, o.Message))
		if h.OnError == v1.HookContinue {
			continue
		}
		if failure == "" {
			failure = fmt.Sprintf("%s hook %s in container %s failed: %s", strings.ToLower(string(stage)), h.Name, h.Container, o.Message)
		}
		if stage == v1.HookStagePre {
			break
		}
	}
	return outs, failure
}

// runHook runs one hook, checking first that the pod and its container run.
func (r *HookReconciler) runHook(ctx context.Context, g *group, stage v1.HookStage, h v1.ResolvedHook) (o v1.HookOutcome) {
	o = v1.HookOutcome{Name: h.Name, Stage: stage, Container: h.Container, OnError: h.OnError, Outcome: v1.HookFailed,
		StartTime: &metav1.Time{Time: r.Clock.Now()}}
	defer func() { o.CompletionTime = &metav1.Time{Time: r.Clock.Now()} }()
	pod, gone := r.livePod(ctx, g)
	if gone != "" {
		o.Message = gone
		return o
	}
	if why := notRunning(pod, h.Container); why != "" {
		o.Message = why
		return o
	}
	tctx, cancel := context.WithTimeout(ctx, h.Timeout.Duration)
	defer cancel()
	log := ctrl.LoggerFrom(ctx)
	log.Info("running hook", "stage", stage, "hook", h.Name, "container", h.Container)
	res, err := r.Executor.Exec(tctx, g.namespace, g.pod.Name, h.Container, h.Command)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (err != nil && tctx.Err() != nil):
		o.Message = bounded(fmt.Sprintf("timed out after %s (the command may still run in the container)%s", h.Timeout.Duration, outputTail(res)))
	case err != nil:
		o.Message = bounded(fmt.Sprintf("could not run: %v", err))
	case res.ExitCode != 0:
		o.Message = bounded(fmt.Sprintf("exit %d%s", res.ExitCode, outputTail(res)))
	default:
		o.Outcome = v1.HookSucceeded
		o.Message = bounded("exit 0" + outputTail(res))
	}
	log.Info("hook ended", "stage", stage, "hook", h.Name, "outcome", o.Outcome, "message", o.Message)
	return o
}

// notRunning says why the container cannot run a command now, or "".
func notRunning(pod *corev1.Pod, container string) string {
	if pod.Status.Phase != corev1.PodRunning {
		return fmt.Sprintf("pod %s is %s, not Running", pod.Name, pod.Status.Phase)
	}
	statuses := pod.Status.ContainerStatuses
	for _, c := range pod.Spec.InitContainers {
		if c.Name == container && IsSidecar(c) {
			statuses = pod.Status.InitContainerStatuses
		}
	}
	for _, s := range statuses {
		if s.Name == container {
			if s.State.Running == nil {
				return fmt.Sprintf("container %s of pod %s is not running", container, pod.Name)
			}
			return ""
		}
	}
	return fmt.Sprintf("container %s of pod %s has no running status", container, pod.Name)
}

// outputTail is ": <end of stderr or stdout>" on one line, or "".
func outputTail(res ExecResult) string {
	out := strings.TrimSpace(res.Stderr)
	if out == "" {
		out = strings.TrimSpace(res.Stdout)
	}
	if out == "" {
		return ""
	}
	out = strings.Join(strings.Fields(out), " ")
	if len(out) > 300 {
		out = "..." + out[len(out)-300:]
	}
	return ": " + out
}

func bounded(s string) string {
	if len(s) > maxMessage {
		return s[:maxMessage-3] + "..."
	}
	return s
}

// record writes a stage's condition and outcomes on every backup of the pod that
// lacks them. A failed PreHooks fails the backups that have not started: the agent
// never reads them.
func (r *HookReconciler) record(ctx context.Context, g *group, cond metav1.Condition, outs []v1.HookOutcome, stage v1.HookStage) error {
	for _, b := range g.backups {
		if apimeta.FindStatusCondition(b.Status.Conditions, cond.Type) != nil {
			continue
		}
		key := client.ObjectKeyFromObject(&b)
		failedNow := false
		err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
			cur := &v1.PodVolumeBackup{}
			if err := r.APIReader.Get(ctx, key, cur); err != nil {
				return err
			}
			if apimeta.FindStatusCondition(cur.Status.Conditions, cond.Type) != nil {
				return nil
			}
			base := cur.DeepCopy()
			c := cond
			c.ObservedGeneration = cur.Generation
			apimeta.SetStatusCondition(&cur.Status.Conditions, c)
			cur.Status.Hooks = append(cur.Status.Hooks, outs...)
			failedNow = false
			if stage == v1.HookStagePre && cond.Status == metav1.ConditionFalse && !finished(cur.Status.Phase) && cur.Status.Phase != v1.RunInProgress {
				now := metav1.Time{Time: r.Clock.Now()}
				cur.Status.Phase = v1.RunFailed
				cur.Status.CompletionTime = &now
				if cur.Status.StartTime == nil {
					cur.Status.StartTime = &now
				}
				cur.Status.Message = cond.Message
				conditions.MarkStalled(&cur.Status.Conditions, cur.Generation, ReasonHookFailed, cond.Message)
				failedNow = true
			}
			return r.Status().Patch(ctx, cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		})
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("recording the %s hooks on PodVolumeBackup %s: %w", strings.ToLower(string(stage)), key, err)
		}
		if failedNow {
			r.Recorder.Eventf(&b, nil, corev1.EventTypeWarning, "Backup"+string(v1.RunFailed), "Backup", "%s", cond.Message)
		}
	}
	return nil
}

// eventAll emits an event on every backup of the pod and on the pod.
func (r *HookReconciler) eventAll(g *group, typ, reason, msg string) {
	for i := range g.backups {
		r.Recorder.Eventf(&g.backups[i], nil, typ, reason, "Hook", "%s", msg)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: g.namespace, Name: g.pod.Name, UID: types.UID(g.pod.UID)}}
	pod.APIVersion, pod.Kind = "v1", "Pod"
	r.Recorder.Eventf(pod, nil, typ, reason, "Hook", "%s", msg)
}

func finished(phase v1.RunPhase) bool {
	return phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled
}
