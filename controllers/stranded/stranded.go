package stranded

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
)

// Reasons of the Stalled condition (and the event) on work the manager fails.
const (
	ReasonNodeGone     = "NodeGone"
	ReasonNodeNotLinux = "NodeNotLinux"
	ReasonNoAgent      = "NoAgent"
)

// DefaultDeadline is how long work may stay stranded before it is failed: long enough
// for an agent pod to be rescheduled or rolled to a new version, short enough that a
// run or a restore does not wait for ever.
const DefaultDeadline = 5 * time.Minute

// nodeIndex indexes PodVolumeBackups and PodVolumeRestores by spec.node.
const nodeIndex = "stranded.spec.node"

// Options configure the guard.
type Options struct {
	// Namespace is the operator namespace, where the agent pods run.
	Namespace string
	// Deadline is how long work may be stranded before it is failed (DefaultDeadline
	// when zero). The count starts when this manager first sees the work stranded.
	Deadline time.Duration
	// AgentLabels select the agent pods in Namespace (those of config/agent by default).
	AgentLabels map[string]string
	// Clock is time, for tests; the real clock when nil.
	Clock clock.PassiveClock
}

// DefaultAgentLabels are the labels of the agent DaemonSet's pods (config/agent).
var DefaultAgentLabels = map[string]string{"app.kubernetes.io/name": "holdfast", "app.kubernetes.io/component": "agent"}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups;podvolumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/status;podvolumerestores/status,verbs=get;patch
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch

// Setup registers the guard for PodVolumeBackups and PodVolumeRestores.
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.Deadline <= 0 {
		opts.Deadline = DefaultDeadline
	}
	if opts.AgentLabels == nil {
		opts.AgentLabels = DefaultAgentLabels
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	g := &guard{Client: mgr.GetClient(), recorder: mgr.GetEventRecorder("holdfast-stranded-work"), opts: opts}
	backups := &reconciler[*v1.PodVolumeBackup]{guard: g, kind: backupKind{}, firstSeen: map[types.UID]time.Time{}}
	restores := &reconciler[*v1.PodVolumeRestore]{guard: g, kind: restoreKind{}, firstSeen: map[types.UID]time.Time{}}
	if err := backups.setup(mgr, &v1.PodVolumeBackup{}); err != nil {
		return err
	}
	return restores.setup(mgr, &v1.PodVolumeRestore{})
}

// guard is what both reconcilers share: where agents run.
type guard struct {
	client.Client
	recorder events.EventRecorder
	opts     Options
}

// strandedBy says why no agent will run work on node in phase, or "" when one can:
// Pending work needs a Linux node with a running agent pod; work an agent claimed
// (InProgress) needs its node, since the agent that comes back there fails it itself.
func (g *guard) strandedBy(ctx context.Context, node string, phase v1.RunPhase) (reason, why string, err error) {
	n := &corev1.Node{}
	if err := g.Get(ctx, types.NamespacedName{Name: node}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return ReasonNodeGone, fmt.Sprintf("node %s no longer exists", node), nil
		}
		return "", "", err
	}
	if phase == v1.RunInProgress {
		return "", "", nil
	}
	if nodeOS := n.Labels[corev1.LabelOSStable]; nodeOS != "" && nodeOS != "linux" {
		return ReasonNodeNotLinux, fmt.Sprintf("node %s runs %s and Holdfast agents run on Linux nodes only", node, nodeOS), nil
	}
	var pods corev1.PodList
	if err := g.List(ctx, &pods, client.InNamespace(g.opts.Namespace), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(g.opts.AgentLabels)}); err != nil {
		return "", "", err
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp.IsZero() {
			return "", "", nil
		}
	}
	return ReasonNoAgent, fmt.Sprintf("no Holdfast agent pod runs on node %s", node), nil
}

// workOnNode lists the unfinished work of a kind on a node, for the node and agent
// pod watches.
func workOnNode[T client.Object](ctx context.Context, c client.Client, list client.ObjectList, node string, items func() []T) []reconcile.Request {
	if node == "" || c.List(ctx, list, client.MatchingFields{nodeIndex: node}) != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, o := range items() {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
	}
	return reqs
}

func isFinished(phase v1.RunPhase) bool {
	return phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled
}

// kind is what the reconciler needs of PodVolumeBackup or PodVolumeRestore.
type kind[T client.Object] interface {
	name() string
	// verb is what the work does to a volume ("backed up"), for the sentence.
	verb() string
	newObject() T
	state(T) (node string, phase v1.RunPhase, pod string, volume string)
	// fail sets the final status of stranded work.
	fail(T, string, string, metav1.Time)
	onNode(ctx context.Context, c client.Client, node string) []reconcile.Request
}

// reconciler fails the stranded work of one kind.
type reconciler[T client.Object] struct {
	*guard
	kind kind[T]
	// firstSeen is when this manager first saw each piece of work stranded.
	mu        sync.Mutex
	firstSeen map[types.UID]time.Time
}

func (r *reconciler[T]) setup(mgr ctrl.Manager, obj T) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), obj, nodeIndex, func(o client.Object) []string {
		node, _, _, _ := r.kind.state(o.(T))
		return []string{node}
	}); err != nil {
		return fmt.Errorf("indexing %ss by node: %w", r.kind.name(), err)
	}
	mapNode := func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.kind.onNode(ctx, r.Client, o.GetName())
	}
	mapAgentPod := func(ctx context.Context, o client.Object) []reconcile.Request {
		if o.GetNamespace() != r.opts.Namespace || !labels.SelectorFromSet(r.opts.AgentLabels).Matches(labels.Set(o.GetLabels())) {
			return nil
		}
		return r.kind.onNode(ctx, r.Client, o.(*corev1.Pod).Spec.NodeName)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("stranded-"+r.kind.name()).
		For(obj).
		// A node matters when it comes, goes or changes its OS label, not on each
		// status heartbeat.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(mapNode), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(mapAgentPod)).
		Complete(r)
}

// Reconcile fails the work once it has been stranded for the deadline, and otherwise
// comes back when the deadline passes; a node or agent pod that appears ends the wait.
func (r *reconciler[T]) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := r.kind.newObject()
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	node, phase, pod, volume := r.kind.state(obj)
	if isFinished(phase) || !obj.GetDeletionTimestamp().IsZero() {
		r.forget(obj.GetUID())
		return ctrl.Result{}, nil
	}
	reason, why, err := r.strandedBy(ctx, node, phase)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("checking the node of %s %s: %w", r.kind.name(), req.NamespacedName, err)
	}
	if reason == "" {
		r.forget(obj.GetUID())
		return ctrl.Result{}, nil
	}
	now := r.opts.Clock.Now()
	if left := r.since(obj.GetUID(), now).Add(r.opts.Deadline).Sub(now); left > 0 {
		ctrl.LoggerFrom(ctx).Info("work is stranded; failing it when the deadline passes", "reason", reason, "why", why, "in", left)
		return ctrl.Result{RequeueAfter: left}, nil
	}
	msg := fmt.Sprintf("%s, so volume %s of pod %s could not be %s: failed after %s without an agent (the manager's --stranded-work-deadline)",
		why, volume, pod, r.kind.verb(), r.opts.Deadline)
	base := obj.DeepCopyObject().(T)
	r.kind.fail(obj, reason, msg, metav1.NewTime(now))
	// An agent that claims the work at the same moment wins: the lock makes this
	// patch fail, and the next reconcile sees the work InProgress.
	if err := r.Status().Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, fmt.Errorf("failing stranded %s %s: %w", r.kind.name(), req.NamespacedName, err)
	}
	r.forget(obj.GetUID())
	r.recorder.Eventf(obj, nil, corev1.EventTypeWarning, reason, "Fail", "%s", msg)
	ctrl.LoggerFrom(ctx).Info("failed stranded work", "reason", reason, "message", msg)
	return ctrl.Result{}, nil
}

func (r *reconciler[T]) since(uid types.UID, now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.firstSeen[uid]
	if !ok {
		r.firstSeen[uid] = now
		t = now
	}
	return t
}

func (r *reconciler[T]) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.firstSeen, uid)
}

type backupKind struct{}

func (backupKind) name() string                   { return "PodVolumeBackup" }
func (backupKind) verb() string                   { return "backed up" }
func (backupKind) newObject() *v1.PodVolumeBackup { return &v1.PodVolumeBackup{} }
func (backupKind) state(o *v1.PodVolumeBackup) (string, v1.RunPhase, string, string) {
	return o.Spec.Node, o.Status.Phase, o.Spec.Pod.Name, o.Spec.Volume
}
func (backupKind) fail(o *v1.PodVolumeBackup, reason, msg string, now metav1.Time) {
	st := &o.Status
	st.Phase, st.Message, st.CompletionTime = v1.RunFailed, msg, &now
	if st.StartTime == nil {
		st.StartTime = &now
	}
	conditions.MarkStalled(&st.Conditions, o.Generation, reason, msg)
}
func (backupKind) onNode(ctx context.Context, c client.Client, node string) []reconcile.Request {
	var list v1.PodVolumeBackupList
	return workOnNode(ctx, c, &list, node, func() []*v1.PodVolumeBackup {
		var out []*v1.PodVolumeBackup
		for i := range list.Items {
			if !isFinished(list.Items[i].Status.Phase) {
				out = append(out, &list.Items[i])
			}
		}
		return out
	})
}

type restoreKind struct{}

func (restoreKind) name() string                    { return "PodVolumeRestore" }
func (restoreKind) verb() string                    { return "restored" }
func (restoreKind) newObject() *v1.PodVolumeRestore { return &v1.PodVolumeRestore{} }
func (restoreKind) state(o *v1.PodVolumeRestore) (string, v1.RunPhase, string, string) {
	return o.Spec.Node, o.Status.Phase, o.Spec.Pod.Name, o.Spec.Volume
}
func (restoreKind) fail(o *v1.PodVolumeRestore, reason, msg string, now metav1.Time) {
	st := &o.Status
	st.Phase, st.Message, st.CompletionTime = v1.RunFailed, msg, &now
	if st.StartTime == nil {
		st.StartTime = &now
	}
	conditions.MarkStalled(&st.Conditions, o.Generation, reason, msg)
}
func (restoreKind) onNode(ctx context.Context, c client.Client, node string) []reconcile.Request {
	var list v1.PodVolumeRestoreList
	return workOnNode(ctx, c, &list, node, func() []*v1.PodVolumeRestore {
		var out []*v1.PodVolumeRestore
		for i := range list.Items {
			if !isFinished(list.Items[i].Status.Phase) {
				out = append(out, &list.Items[i])
			}
		}
		return out
	})
}
