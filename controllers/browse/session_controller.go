package browse

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// Reasons of a session's Ready condition.
const (
	ReasonReadingStore     = "ReadingStore"
	ReasonListed           = "Listed"
	ReasonRelayStarting    = "RelayStarting"
	ReasonServing          = "Serving"
	ReasonSnapshotNotFound = "SnapshotNotFound"
	ReasonInvalidSource    = "InvalidSource"
	ReasonRelayFailed      = "RelayFailed"
	ReasonExpired          = "Expired"
)

const (
	// maxRestorePoints bounds status.restorePoints (the CRD allows 200).
	maxRestorePoints = 200
	// keepExpired is how long an expired session stays, for `kubectl get browse` to
	// show who read what; its events last as long as the cluster keeps events.
	keepExpired = 24 * time.Hour
	// storeRetry is how soon a session that waits for the store looks again.
	storeRetry = 10 * time.Second
)

// SessionReconciler lists a session's restore points and, for a snapshot, runs the
// relay pod that serves it until the ttl passes.
type SessionReconciler struct {
	client.Client
	// APIReader reads the helper ConfigMap (not cached).
	APIReader client.Reader
	Catalog   *storage.Catalog
	// Relay configures the relay pods: the operator namespace's helper settings and
	// image, as for claim pods.
	Relay restore.ClaimPodOptions
	// Endpoint is where relay pods reach the manager.
	Endpoint Endpoint
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=browsesessions,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=browsesessions/status,verbs=get;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=browsesessions/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

func (r *SessionReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile moves one session along.
func (r *SessionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &v1.BrowseSession{}
	if err := r.Get(ctx, req.NamespacedName, s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !s.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	before := s.DeepCopy()
	expires := ExpiresAt(s)
	s.Status.ExpiresAt = &metav1.Time{Time: expires}
	s.Status.ObservedGeneration = s.Generation
	now := r.now()

	var result ctrl.Result
	if !now.Before(expires) {
		if since := now.Sub(expires); since >= keepExpired {
			return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, s))
		}
		if err := r.deleteRelay(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
		s.Status.Phase = v1.BrowseExpired
		s.Status.RelayPod = ""
		conditions.MarkStalled(&s.Status.Conditions, s.Generation, ReasonExpired,
			fmt.Sprintf("the session ended at %s; create another one to read the backups again", expires.UTC().Format(time.RFC3339)))
		result = ctrl.Result{RequeueAfter: expires.Add(keepExpired).Sub(now)}
	} else {
		var err error
		if result, err = r.serve(ctx, s, now); err != nil {
			return ctrl.Result{}, err
		}
		if left := expires.Sub(now); result.RequeueAfter == 0 || result.RequeueAfter > left {
			result.RequeueAfter = left
		}
	}
	if err := r.Status().Patch(ctx, s, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return result, nil
}

// ExpiresAt is when session s ends: its creation plus its ttl.
func ExpiresAt(s *v1.BrowseSession) time.Time {
	ttl := 15 * time.Minute
	if s.Spec.TTL != nil {
		ttl = s.Spec.TTL.Duration
	}
	return s.CreationTimestamp.Add(ttl)
}

// SourcePath is the source identity a session's spec.source names: a claim's, or the
// path itself. It returns an error for a path that no backup can have.
func SourcePath(source string) (string, error) {
	if !strings.HasPrefix(source, "/") {
		if msgs := validation.IsDNS1123Subdomain(source); len(msgs) > 0 {
			return "", fmt.Errorf("spec.source %q is neither a claim name (%s) nor a source path starting with /", source, strings.Join(msgs, "; "))
		}
		return identity.ClaimSourcePath(source), nil
	}
	for _, part := range strings.Split(source[1:], "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("spec.source %q is not a source path: it has an empty, . or .. segment", source)
		}
	}
	return source, nil
}

// serve lists the restore points and keeps the relay pod of a session that lives.
func (r *SessionReconciler) serve(ctx context.Context, s *v1.BrowseSession, now time.Time) (ctrl.Result, error) {
	source, err := SourcePath(s.Spec.Source)
	if err != nil {
		return r.fail(s, ReasonInvalidSource, err.Error())
	}
	s.Status.SourcePath = source
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: s.Namespace}, ns); err != nil {
		return ctrl.Result{}, err
	}
	points, waiting, err := r.Catalog.RestorePoints(ctx, s.Namespace, "")
	if err != nil {
		return ctrl.Result{}, err
	}
	mine, foreign := restorePointsOf(points, source, ns)
	s.Status.RestorePoints, s.Status.RestorePointsOmitted = mine, 0
	if len(mine) > maxRestorePoints {
		s.Status.RestorePoints, s.Status.RestorePointsOmitted = mine[:maxRestorePoints], int32(len(mine)-maxRestorePoints)
	}
	listed := listedMessage(s, foreign)
	if len(waiting) > 0 {
		s.Status.Phase = v1.BrowsePending
		conditions.MarkNotReady(&s.Status.Conditions, s.Generation, ReasonReadingStore,
			"reading the store: "+strings.Join(waiting, "; ")+"; "+listed)
		return ctrl.Result{RequeueAfter: storeRetry}, nil
	}
	if s.Spec.SnapshotID == "" {
		s.Status.Phase = v1.BrowseReady
		conditions.MarkReady(&s.Status.Conditions, s.Generation, ReasonListed, listed)
		return ctrl.Result{}, nil
	}
	if !hasPoint(s.Status.RestorePoints, s.Spec.SnapshotID) {
		return r.fail(s, ReasonSnapshotNotFound, fmt.Sprintf("snapshot %s is not a restore point of %s that namespace %s may read (%s)",
			s.Spec.SnapshotID, source, s.Namespace, listed))
	}
	return r.relay(ctx, s, now)
}

func (r *SessionReconciler) fail(s *v1.BrowseSession, reason, msg string) (ctrl.Result, error) {
	s.Status.Phase = v1.BrowseFailed
	s.Status.RelayPod = ""
	conditions.MarkStalled(&s.Status.Conditions, s.Generation, reason, msg)
	return ctrl.Result{}, nil
}

// restorePointsOf keeps the points of source that ns may read (its own incarnation or
// one it adopts), newest first; foreign counts those it may not.
func restorePointsOf(points []storage.RestorePoint, source string, ns *corev1.Namespace) ([]v1.BrowseRestorePoint, int) {
	var out []v1.BrowseRestorePoint
	foreign := 0
	for _, p := range points {
		if p.SourcePath != source {
			continue
		}
		uid := p.NamespaceUID()
		if !identity.Adopts(ns, uid) {
			foreign++
			continue
		}
		bp := v1.BrowseRestorePoint{SnapshotID: p.ID, Time: metav1.NewTime(p.StartTime.UTC().Truncate(time.Second)), Size: p.Size,
			Repository: p.Repository, StorageLocation: p.StorageLocation, Uploader: p.Uploader, Backup: p.Tags[identity.TagBackup]}
		if uid != string(ns.UID) {
			bp.NamespaceUID = uid
		}
		out = append(out, bp)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time.Time) })
	return out, foreign
}

func hasPoint(points []v1.BrowseRestorePoint, id string) bool {
	for _, p := range points {
		if p.SnapshotID == id {
			return true
		}
	}
	return false
}

func listedMessage(s *v1.BrowseSession, foreign int) string {
	n := len(s.Status.RestorePoints) + int(s.Status.RestorePointsOmitted)
	msg := fmt.Sprintf("%s of %s", plural(n, "restore point"), s.Status.SourcePath)
	if foreign > 0 {
		msg += fmt.Sprintf(" (and %s taken in an earlier namespace %s that this one does not adopt)", plural(foreign, "snapshot"), s.Namespace)
	}
	return msg
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// relay keeps the relay pod of a session that opens a snapshot, and says whether it
// serves.
func (r *SessionReconciler) relay(ctx context.Context, s *v1.BrowseSession, now time.Time) (ctrl.Result, error) {
	name := RelayPodName(s)
	s.Status.RelayPod = name
	pod := &corev1.Pod{}
	err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		helper, warnings, err := restore.ReadHelperPod(ctx, r.APIReader, r.Relay.Namespace, r.Relay.Image)
		if err != nil {
			return ctrl.Result{}, err
		}
		for _, w := range warnings {
			log.FromContext(ctx).Info(w)
		}
		ep, err := r.Endpoint.Get(ctx)
		if err != nil {
			s.Status.Phase = v1.BrowsePending
			conditions.MarkNotReady(&s.Status.Conditions, s.Generation, ReasonRelayStarting, "cannot start the relay pod yet: "+err.Error())
			return ctrl.Result{RequeueAfter: storeRetry}, nil
		}
		pod = NewRelayPod(s, name, ep, helper)
		if err := controllerutil.SetControllerReference(s, pod, r.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		switch err := r.Create(ctx, pod); {
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			// An admission policy or a namespace's pod security refuses it: say which.
			return r.fail(s, ReasonRelayFailed, fmt.Sprintf("cannot create relay pod %s: %v", name, err))
		case err != nil && !apierrors.IsAlreadyExists(err):
			return ctrl.Result{}, fmt.Errorf("creating relay pod %s: %w", name, err)
		}
	case err != nil:
		return ctrl.Result{}, err
	case !metav1.IsControlledBy(pod, s):
		return r.fail(s, ReasonRelayFailed, fmt.Sprintf("pod %s exists and is not this session's relay pod", name))
	}
	switch {
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		return r.fail(s, ReasonRelayFailed, fmt.Sprintf("relay pod %s stopped (%s); create another session", name, pod.Status.Phase))
	case relayReady(pod):
		s.Status.Phase = v1.BrowseReady
		conditions.MarkReady(&s.Status.Conditions, s.Generation, ReasonServing,
			fmt.Sprintf("pod %s serves snapshot %s of %s on 127.0.0.1:%d until %s", name, s.Spec.SnapshotID, s.Status.SourcePath,
				v1.RelayPort, ExpiresAt(s).UTC().Format(time.RFC3339)))
		return ctrl.Result{}, nil
	}
	s.Status.Phase = v1.BrowsePending
	conditions.MarkReconciling(&s.Status.Conditions, s.Generation, ReasonRelayStarting,
		fmt.Sprintf("starting relay pod %s: %s", name, restore.ClaimPodWaiting(pod, "")))
	return ctrl.Result{}, nil
}

func relayReady(pod *corev1.Pod) bool {
	if !restore.ClaimPodRunning(pod) {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (r *SessionReconciler) deleteRelay(ctx context.Context, s *v1.BrowseSession) error {
	pod := &corev1.Pod{}
	err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: RelayPodName(s)}, pod)
	if apierrors.IsNotFound(err) || (err == nil && (!metav1.IsControlledBy(pod, s) || !pod.DeletionTimestamp.IsZero())) {
		return nil
	}
	if err != nil {
		return err
	}
	return client.IgnoreNotFound(r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}))
}

// SetupWithManager watches sessions and their relay pods.
func (r *SessionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.BrowseSession{}).
		Owns(&corev1.Pod{}).
		Named("browsesession").
		Complete(r)
}
