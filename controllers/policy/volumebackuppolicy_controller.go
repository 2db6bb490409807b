package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Condition reasons of a VolumeBackupPolicy.
const (
	ReasonInvalidSelector = "InvalidSelector"
	ReasonInvalidSchedule = "InvalidSchedule"
	ReasonSuspended       = "Suspended"
	ReasonRunInProgress   = "RunInProgress"
	ReasonSelecting       = "Selecting"
	// ReasonStorageLocationNotReady: the storage location is missing or not Ready;
	// runs back up nothing until it is.
	ReasonStorageLocationNotReady = "StorageLocationNotReady"
	// ReasonWaitingForStorageLocation: the storage location has not been probed yet;
	// a due run waits for the probe.
	ReasonWaitingForStorageLocation = "WaitingForStorageLocation"
	TriggerSchedule                 = "Schedule"
	TriggerRunNow                   = "RunNow"
	fieldOwner                      = "holdfast-policy-controller"
)

// VolumeBackupPolicyReconciler selects volumes for each VolumeBackupPolicy, reports the
// selection in status and starts its runs.
type VolumeBackupPolicyReconciler struct {
	client.Client
	Engine   *celpolicy.Engine
	Recorder record.EventRecorder
	// APIReader reads the policy straight from the API server before a run starts:
	// the cache can lag behind the status this controller just wrote, and a stale
	// view would handle the same run-now token or schedule tick twice. Nil skips the
	// check (single-step tests).
	APIReader client.Reader
	// Clock is the time source; tests drive it. Nil is the real clock.
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;persistentvolumeclaims;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// scope carries what the steps of one reconcile found.
type scope struct {
	policy   *v1.VolumeBackupPolicy
	selector *celpolicy.Selector
	schedule *cronSchedule
	now      time.Time
	sel      *selection
	requeue  time.Duration
	// stale is set when the cached policy is older than the API server's: the pass
	// ends without writing anything.
	stale bool
	// done is set by a step that ends the pass early (a stalled policy).
	done bool
	// creating is set while a jittered run still has volumes to start.
	creating bool
	// unfinished maps <namespace><sourcePath> to the run of its unfinished backup.
	unfinished map[string]string
	// locationProblem says why the storage location cannot take backups (missing,
	// not Ready); a run started now fails at once with it.
	locationProblem string
	// locationUnprobed is set while the storage location has not been probed yet: a
	// due run waits instead of failing on a location that may well be fine.
	locationUnprobed bool
}

// Reconcile gets the policy, runs the steps in order and patches the status once.
func (r *VolumeBackupPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	p := &v1.VolumeBackupPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Engine.Forget(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // deleting: its backups are retained or removed by deletionPolicy elsewhere
	}
	base := p.DeepCopy()
	if p.Status.ObservedGeneration == 0 {
		// The first status write must carry the counts even when they are 0: a merge
		// patch leaves out what did not change, and `kubectl get vbp` would show an
		// empty Skipped column instead of 0.
		base.Status.SelectedNamespaces, base.Status.SelectedVolumes, base.Status.SkippedVolumes = -1, -1, -1
	}
	s := &scope{policy: p, now: r.now()}
	defer func() {
		if s.stale {
			// Nothing computed from a stale view may be written; the newer status
			// brings the policy back.
			return
		}
		if err := r.Status().Patch(ctx, p, client.MergeFrom(base), client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("patching the status of VolumeBackupPolicy %s: %w", p.Name, err))
		}
	}()
	steps := []func(context.Context, *scope) error{
		r.reconcileSpec,
		r.reconcileSelection,
		r.reconcileStorageLocation,
		r.reconcileRun,
		r.reconcileLastRun,
		r.reconcileReady,
	}
	for _, step := range steps {
		if err := step(ctx, s); err != nil {
			conditions.MarkNotReady(&p.Status.Conditions, p.Generation, "Error", err.Error())
			return ctrl.Result{}, fmt.Errorf("VolumeBackupPolicy %s: %w", p.Name, err)
		}
		if s.done {
			return ctrl.Result{RequeueAfter: s.requeue}, nil
		}
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

func (r *VolumeBackupPolicyReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now().UTC()
	}
	return r.Clock.Now().UTC()
}

// reconcileSpec compiles the selector and parses the schedule. A policy that does
// not compile is Stalled with the field path and the compiler's message, and nothing
// else is done with it (the webhook normally rejects it; it got in while the webhook was
// down). Sets: Stalled, Ready=False on failure.
func (r *VolumeBackupPolicyReconciler) reconcileSpec(ctx context.Context, s *scope) error {
	p := s.policy
	sel, err := r.Engine.ForPolicy(p)
	if err != nil {
		if !stalledWith(p, ReasonInvalidSelector, err.Error()) {
			r.Recorder.Event(p, corev1.EventTypeWarning, ReasonInvalidSelector, err.Error())
			log.FromContext(ctx).Info("selector does not compile", "error", err.Error())
		}
		conditions.MarkStalled(&p.Status.Conditions, p.Generation, ReasonInvalidSelector, err.Error())
		p.Status.ObservedGeneration = p.Generation
		p.Status.NextScheduleTime = nil
		s.done = true
		return nil
	}
	sched, err := parseSchedule(p.Spec.Schedule)
	if err != nil {
		if !stalledWith(p, ReasonInvalidSchedule, err.Error()) {
			r.Recorder.Event(p, corev1.EventTypeWarning, ReasonInvalidSchedule, err.Error())
		}
		conditions.MarkStalled(&p.Status.Conditions, p.Generation, ReasonInvalidSchedule, err.Error())
		p.Status.ObservedGeneration = p.Generation
		p.Status.NextScheduleTime = nil
		s.done = true
		return nil
	}
	s.selector, s.schedule = sel, sched
	return nil
}

func stalledWith(p *v1.VolumeBackupPolicy, reason, msg string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.ConditionStalled && c.Status == metav1.ConditionTrue && c.Reason == reason && c.Message == msg {
			return true
		}
	}
	return false
}

// reconcileSelection evaluates the selector over the cached namespaces, pods and
// claims and records the counts and skip reasons. Sets no condition.
func (r *VolumeBackupPolicyReconciler) reconcileSelection(ctx context.Context, s *scope) error {
	snap, err := r.snapshot(ctx)
	if err != nil {
		return err
	}
	hadErrors := hasSkip(s.policy.Status.Skipped, SkipSelectorError)
	s.sel = selectVolumes(s.selector, snap)
	if s.sel.firstError != nil && !hadErrors {
		msg := fmt.Sprintf("the selector failed on %d volumes (skipped as %s), first %v",
			len(s.sel.skipped[SkipSelectorError]), SkipSelectorError, s.sel.firstError)
		r.Recorder.Event(s.policy, corev1.EventTypeWarning, "SelectorEvaluationFailed", msg)
		log.FromContext(ctx).Info(msg)
	}
	if s.unfinished, err = r.unfinishedBackups(ctx, s.policy); err != nil {
		return err
	}
	current := ""
	if s.policy.Status.LastRun != nil {
		current = s.policy.Status.LastRun.Name
	}
	applyInFlight(s, current)
	return nil
}

func hasSkip(skipped []v1.SkippedVolumes, reason string) bool {
	for _, s := range skipped {
		if s.Reason == reason {
			return true
		}
	}
	return false
}

// applyInFlight moves to InFlight the selected volumes that still have an unfinished
// backup of this policy from a run other than run (the run whose backups are being
// created is expected to have some), and updates the selection counts in status.
func applyInFlight(s *scope, run string) {
	kept := s.sel.targets[:0]
	for _, t := range s.sel.targets {
		if r, ok := s.unfinished[t.pod.Namespace+t.sourcePath]; ok && r != run {
			s.sel.skip(SkipInFlight, t.pod, t.volume)
			continue
		}
		kept = append(kept, t)
	}
	s.sel.targets = kept
	st := &s.policy.Status
	st.SelectedNamespaces = int32(s.sel.namespaces)
	st.SelectedVolumes = int32(len(s.sel.targets))
	st.SkippedVolumes, st.Skipped = skippedStatus(s.sel.skipped)
}

// unfinishedBackups maps <namespace><sourcePath> to the run of each unfinished backup of
// this policy.
func (r *VolumeBackupPolicyReconciler) unfinishedBackups(ctx context.Context, p *v1.VolumeBackupPolicy) (map[string]string, error) {
	var pvbs v1.PodVolumeBackupList
	if err := r.List(ctx, &pvbs, client.MatchingLabels{v1.LabelPolicy: p.Name}); err != nil {
		return nil, fmt.Errorf("listing PodVolumeBackups: %w", err)
	}
	out := map[string]string{}
	for _, b := range pvbs.Items {
		if !finished(b.Status.Phase) {
			out[b.Namespace+b.Spec.SourcePath] = b.Labels[v1.LabelRun]
		}
	}
	return out, nil
}

func finished(phase v1.RunPhase) bool {
	return phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled
}

// snapshot reads namespaces, pods, claims and ReplicaSet owners from the informer
// caches without copying them (nothing here modifies them): one pass over 10,000 pods
// costs no API call and no deep copy.
func (r *VolumeBackupPolicyReconciler) snapshot(ctx context.Context) (*snapshot, error) {
	var nss corev1.NamespaceList
	if err := r.List(ctx, &nss, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &pvcs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing claims: %w", err)
	}
	var rss metav1.PartialObjectMetadataList
	rss.SetGroupVersionKind(replicaSetListGVK)
	if err := r.List(ctx, &rss, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing replica sets: %w", err)
	}
	snap := &snapshot{pods: map[string][]*corev1.Pod{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
	for i := range nss.Items {
		snap.namespaces = append(snap.namespaces, &nss.Items[i])
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		snap.pods[pod.Namespace] = append(snap.pods[pod.Namespace], pod)
	}
	for i := range pvcs.Items {
		snap.claims[claimKey(pvcs.Items[i].Namespace, pvcs.Items[i].Name)] = &pvcs.Items[i]
	}
	owners := map[string]*metav1.OwnerReference{}
	for i := range rss.Items {
		if o := metav1.GetControllerOf(&rss.Items[i]); o != nil {
			owners[rss.Items[i].Namespace+"/"+rss.Items[i].Name] = o
		}
	}
	snap.rsOwner = ownerFromCache(owners)
	return snap, nil
}

// reconcileStorageLocation reads the policy's storage location. A missing or failing
// location is not a reason to skip a due run silently: the run is recorded as Failed
// with the location's own sentence (startRun), and the policy is not Ready. Sets no
// condition (reconcileReady does).
func (r *VolumeBackupPolicyReconciler) reconcileStorageLocation(ctx context.Context, s *scope) error {
	name := s.policy.Spec.StorageLocation
	bsl := &v1.BackupStorageLocation{}
	err := r.Get(ctx, client.ObjectKey{Name: name}, bsl)
	switch {
	case apierrors.IsNotFound(err):
		s.locationProblem = fmt.Sprintf("storage location %q does not exist", name)
	case err != nil:
		return fmt.Errorf("getting BackupStorageLocation %s: %w", name, err)
	case conditions.IsReady(bsl.Status.Conditions):
	case apimeta.IsStatusConditionFalse(bsl.Status.Conditions, v1.ConditionReady):
		s.locationProblem = fmt.Sprintf("storage location %q is not Ready: %s", name, conditions.ReadyMessage(bsl.Status.Conditions))
	default:
		s.locationUnprobed = true
	}
	return nil
}

// reconcileRun starts a run when a new run-now token or a due schedule tick asks for
// one (unless suspended), and keeps creating the PodVolumeBackups of a jittered run as
// their offsets come. Sets Reconciling while a run is being created.
func (r *VolumeBackupPolicyReconciler) reconcileRun(ctx context.Context, s *scope) error {
	p := s.policy
	st := &p.Status
	token := p.Annotations[v1.AnnotationRunNow]
	if p.Spec.Suspend {
		st.NextScheduleTime = nil
		// A token seen while suspended is consumed, so resuming does not start a run.
		st.LastRunNowToken = token
	} else {
		switch {
		case s.locationUnprobed:
			// Neither the token nor the tick is consumed: the location's first probe
			// (watched) brings the policy back.
			s.requeueAt(time.Minute)
		case token != "" && token != st.LastRunNowToken:
			if stale, err := r.staleView(ctx, s); err != nil || stale {
				return err
			}
			st.LastRunNowToken = token
			r.startRun(ctx, s, TriggerRunNow, s.now)
		case s.schedule != nil:
			after := p.CreationTimestamp.UTC()
			if st.LastScheduleTime != nil {
				after = st.LastScheduleTime.UTC()
			}
			if tick, due := s.schedule.latestDue(after, s.now); due {
				if stale, err := r.staleView(ctx, s); err != nil || stale {
					return err
				}
				st.LastScheduleTime = &metav1.Time{Time: tick}
				r.startRun(ctx, s, TriggerSchedule, tick)
			}
		}
		if s.schedule != nil {
			next := s.schedule.next(s.now)
			st.NextScheduleTime = &metav1.Time{Time: next}
			s.requeueAt(next.Sub(s.now))
		}
	}
	return r.createDueBackups(ctx, s)
}

// staleView reports whether the API server holds a newer version of the policy than
// the cache gave this pass; the pass then ends without writing (and is requeued).
func (r *VolumeBackupPolicyReconciler) staleView(ctx context.Context, s *scope) (bool, error) {
	if r.APIReader == nil {
		return false, nil
	}
	fresh := &v1.VolumeBackupPolicy{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.policy), fresh); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if fresh.ResourceVersion == s.policy.ResourceVersion {
		return false, nil
	}
	s.stale, s.done = true, true
	s.requeueAt(time.Second)
	return true, nil
}

func (s *scope) requeueAt(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

func (r *VolumeBackupPolicyReconciler) startRun(ctx context.Context, s *scope, trigger string, at time.Time) {
	p := s.policy
	run := &v1.RunSummary{
		Name:      runName(p.Name, at, trigger),
		Trigger:   trigger,
		Outcome:   v1.RunOutcomeInProgress,
		StartTime: &metav1.Time{Time: at},
	}
	p.Status.LastRun = run
	applyInFlight(s, run.Name)
	if s.locationProblem != "" {
		run.Outcome = v1.RunOutcomeFailed
		run.CompletionTime = &metav1.Time{Time: s.now}
		run.VolumesSkipped = int32(len(s.sel.targets)) + p.Status.SkippedVolumes
		run.Message = "no volume was backed up: " + s.locationProblem
		msg := fmt.Sprintf("run %s (%s) Failed: %s", run.Name, trigger, run.Message)
		r.Recorder.Event(p, corev1.EventTypeWarning, "RunFailed", msg)
		log.FromContext(ctx).Info(msg)
		return
	}
	msg := fmt.Sprintf("run %s started (%s): %d volumes selected, %d skipped", run.Name, trigger, len(s.sel.targets), p.Status.SkippedVolumes)
	r.Recorder.Event(p, corev1.EventTypeNormal, "RunStarted", msg)
	log.FromContext(ctx).Info(msg)
}

// createDueBackups creates, for the last run while it is being created, the
// PodVolumeBackups whose jitter offset has passed, and the BackupRepository of each
// namespace they are in. Names are deterministic, so creating twice is harmless.
func (r *VolumeBackupPolicyReconciler) createDueBackups(ctx context.Context, s *scope) error {
	p := s.policy
	run := p.Status.LastRun
	if run == nil || run.Outcome != v1.RunOutcomeInProgress || run.StartTime == nil {
		return nil
	}
	jitter := jitterFor(s, run)
	// A run takes its volumes during the jitter window after its start; a minute's
	// grace lets a pass that failed half-way finish the set. After that, pods that
	// appear belong to the next run.
	elapsed := s.now.Sub(run.StartTime.Time)
	if elapsed > jitter+time.Minute || (elapsed > jitter && run.VolumesTotal > 0) {
		return nil
	}
	uploader := p.Spec.Uploader
	if uploader == "" {
		uploader = v1.UploaderKopia
	}
	repo := identity.RepositoryName(p.Spec.StorageLocation, uploader)
	ensured := map[string]bool{}
	pending := false
	for _, t := range s.sel.targets {
		offset := jitterOffset(jitter, t.pod.Namespace, t.sourcePath)
		if run.StartTime.Add(offset).After(s.now) {
			pending = true
			s.requeueAt(run.StartTime.Add(offset).Sub(s.now))
			continue
		}
		if !ensured[t.pod.Namespace] {
			if err := r.ensureRepository(ctx, p, t.pod.Namespace, repo, uploader); err != nil {
				return err
			}
			ensured[t.pod.Namespace] = true
		}
		if err := r.createBackup(ctx, p, run.Name, repo, uploader, t); err != nil {
			return err
		}
	}
	if pending {
		s.creating = true
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonRunInProgress,
			fmt.Sprintf("run %s is starting its volumes over the %s jitter window", run.Name, jitter))
	}
	return nil
}

func (r *VolumeBackupPolicyReconciler) ensureRepository(ctx context.Context, p *v1.VolumeBackupPolicy, ns, name string, uploader v1.Uploader) error {
	// The repository usually exists from an earlier run: look in the cache first, so
	// that a run does not send one create per namespace only to be told it exists
	// (1,000 of a run's 11,054 requests in make bench). A cache that is behind only
	// costs that create.
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1.BackupRepository{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading BackupRepository %s/%s: %w", ns, name, err)
	}
	repo := &v1.BackupRepository{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			v1.LabelStorageLocation: p.Spec.StorageLocation, v1.LabelManagedBy: v1.ManagedByValue}},
		Spec: v1.BackupRepositorySpec{StorageLocation: p.Spec.StorageLocation, Uploader: uploader},
	}
	if err := r.Create(ctx, repo, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating BackupRepository %s/%s: %w", ns, name, err)
	}
	return nil
}

func (r *VolumeBackupPolicyReconciler) createBackup(ctx context.Context, p *v1.VolumeBackupPolicy, run, repo string, uploader v1.Uploader, t target) error {
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: t.pod.Namespace}, ns); err != nil {
		return fmt.Errorf("reading namespace %s: %w", t.pod.Namespace, err)
	}
	parent, err := r.parentFor(ctx, ns, repo, t.sourcePath)
	if err != nil {
		return err
	}
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{
			Name:      identity.PodVolumeBackupName(run, t.pod.Name, t.volume),
			Namespace: t.pod.Namespace,
			Labels: map[string]string{
				v1.LabelPolicy: p.Name, v1.LabelRun: run,
				v1.LabelStorageLocation: p.Spec.StorageLocation, v1.LabelManagedBy: v1.ManagedByValue,
			},
		},
		Spec: v1.PodVolumeBackupSpec{
			Node:             t.pod.Spec.NodeName,
			Pod:              v1.PodReference{Name: t.pod.Name, UID: string(t.pod.UID)},
			Volume:           t.volume,
			ClaimName:        t.claim,
			SourcePath:       t.sourcePath,
			StorageLocation:  p.Spec.StorageLocation,
			Repository:       repo,
			Uploader:         uploader,
			Tags:             map[string]string{identity.TagPolicy: p.Name, identity.TagRun: run, identity.TagNamespaceUID: string(ns.UID)},
			ParentSnapshotID: parent,
		},
	}
	if err := r.Create(ctx, pvb, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PodVolumeBackup %s/%s: %w", pvb.Namespace, pvb.Name, err)
	}
	return nil
}

// reconcileLastRun aggregates the last run's PodVolumeBackups into status.lastRun
// while it is in progress, and emits an event when it ends. Sets no condition.
func (r *VolumeBackupPolicyReconciler) reconcileLastRun(ctx context.Context, s *scope) error {
	p := s.policy
	run := p.Status.LastRun
	if run == nil || run.Message != "" || run.Outcome != v1.RunOutcomeInProgress {
		// No run, one that backed up nothing and says why, or one that ended: its
		// summary is history. Counted again once its backups went with their
		// namespace, an ended run would read as nothing backed up, and as in progress
		// again as soon as the namespace's pods came back, whose backups it would then
		// create under its old name.
		return nil
	}
	var pvbs v1.PodVolumeBackupList
	if err := r.List(ctx, &pvbs, client.MatchingLabels{v1.LabelPolicy: p.Name, v1.LabelRun: run.Name}); err != nil {
		return fmt.Errorf("listing the PodVolumeBackups of run %s: %w", run.Name, err)
	}
	wasInProgress := run.Outcome == v1.RunOutcomeInProgress
	sum := summarize(pvbs.Items)
	run.VolumesTotal, run.VolumesCompleted, run.VolumesFailed, run.BytesUploaded = sum.total, sum.completed, sum.failed, sum.bytes
	if wasInProgress {
		run.VolumesSkipped = p.Status.SkippedVolumes
	}
	creationOver := s.now.Sub(run.StartTime.Time) >= jitterFor(s, run)
	switch {
	case sum.total == 0 && creationOver && len(s.sel.targets) == 0 && run.VolumesSkipped > 0:
		// Every selected volume was skipped (still in flight from an earlier run, or
		// of a kind that cannot be backed up): nothing is protected by this run.
		run.Outcome = v1.RunOutcomeFailed
		run.Message = fmt.Sprintf("no volume was backed up: the %d selected volumes were all skipped (status.skipped says why)", run.VolumesSkipped)
	case sum.total == 0 && creationOver && len(s.sel.targets) == 0:
		run.Outcome = v1.RunOutcomeSucceeded // nothing selected, nothing to back up
	case sum.total == 0 || sum.completed+sum.failed < sum.total || !creationOver:
		run.Outcome = v1.RunOutcomeInProgress
	case sum.failed == 0:
		run.Outcome = v1.RunOutcomeSucceeded
	case sum.completed == 0:
		run.Outcome = v1.RunOutcomeFailed
	default:
		run.Outcome = v1.RunOutcomePartiallyFailed
	}
	if wasInProgress && run.Outcome != v1.RunOutcomeInProgress {
		if sum.lastDone != nil {
			run.CompletionTime = sum.lastDone
		} else {
			run.CompletionTime = &metav1.Time{Time: s.now}
		}
		typ := corev1.EventTypeNormal
		if run.Outcome != v1.RunOutcomeSucceeded {
			typ = corev1.EventTypeWarning
		}
		msg := fmt.Sprintf("run %s %s: %d of %d volumes backed up, %d failed, %d bytes uploaded",
			run.Name, run.Outcome, sum.completed, sum.total, sum.failed, sum.bytes)
		if run.Message != "" {
			msg = fmt.Sprintf("run %s %s: %s", run.Name, run.Outcome, run.Message)
		}
		r.Recorder.Event(p, typ, "Run"+string(run.Outcome), msg)
		log.FromContext(ctx).Info(msg)
	}
	return nil
}

func jitterFor(s *scope, run *v1.RunSummary) time.Duration {
	if s.schedule != nil && run.Trigger == TriggerSchedule {
		return s.schedule.jitter
	}
	return 0
}

type runSum struct {
	total, completed, failed int32
	bytes                    int64
	lastDone                 *metav1.Time
}

func summarize(pvbs []v1.PodVolumeBackup) runSum {
	var s runSum
	for _, b := range pvbs {
		s.total++
		switch b.Status.Phase {
		case v1.RunCompleted:
			s.completed++
		case v1.RunFailed, v1.RunCanceled:
			s.failed++
		}
		s.bytes += b.Status.BytesUploaded
		if t := b.Status.CompletionTime; t != nil && (s.lastDone == nil || t.After(s.lastDone.Time)) {
			s.lastDone = t
		}
	}
	return s
}

// reconcileReady marks the policy Ready when its selector and schedule work, unless a
// run is still being created (Reconciling). Sets observedGeneration after a clean pass.
func (r *VolumeBackupPolicyReconciler) reconcileReady(ctx context.Context, s *scope) error {
	p := s.policy
	p.Status.ObservedGeneration = p.Generation
	if s.creating {
		return nil // Reconciling until every volume of the run has started
	}
	msg := fmt.Sprintf("%d volumes selected in %d namespaces, %d skipped", p.Status.SelectedVolumes, p.Status.SelectedNamespaces, p.Status.SkippedVolumes)
	switch {
	case s.locationProblem != "":
		conditions.MarkNotReady(&p.Status.Conditions, p.Generation, ReasonStorageLocationNotReady,
			s.locationProblem+"; runs back up nothing until it is Ready ("+msg+")")
		return nil
	case s.locationUnprobed:
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonWaitingForStorageLocation,
			fmt.Sprintf("waiting for the first probe of storage location %q (%s)", p.Spec.StorageLocation, msg))
		return nil
	}
	reason := conditions.ReasonSucceeded
	if p.Spec.Suspend {
		reason, msg = ReasonSuspended, "suspended: "+msg
	}
	conditions.MarkReady(&p.Status.Conditions, p.Generation, reason, msg)
	return nil
}

// runName is <policy>-<UTC time>[n], at most 63 characters (it is a label value). A run
// started by run-now ends in "n" so that it never shares a name with a schedule tick.
func runName(policy string, at time.Time, trigger string) string {
	suffix := at.UTC().Format("20060102150405")
	if trigger == TriggerRunNow {
		suffix += "n"
	}
	const maxPrefix = 63 - 1 - 15
	if len(policy) > maxPrefix {
		sum := sha256.Sum256([]byte(policy))
		policy = policy[:maxPrefix-9] + "-" + hex.EncodeToString(sum[:])[:8]
	}
	return policy + "-" + suffix
}

// SetupWithManager watches policies and everything a selection reads, mapping each
// change to the policies it can affect.
func (r *VolumeBackupPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("volumebackuppolicy-controller")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.PodVolumeBackup{}, sourceIndex, indexBySource); err != nil {
		return fmt.Errorf("indexing PodVolumeBackups by source: %w", err)
	}
	rsMeta := &metav1.PartialObjectMetadata{}
	rsMeta.SetGroupVersionKind(replicaSetGVK)
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeBackupPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace), builder.WithPredicates(podChangeMatters)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies)).
		Watches(&v1.PodVolumeBackup{}, handler.EnqueueRequestsFromMapFunc(policyOfBackup)).
		Watches(&v1.BackupStorageLocation{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfLocation)).
		WatchesMetadata(rsMeta, handler.EnqueueRequestsFromMapFunc(r.policiesForNamespace), builder.OnlyMetadata).
		Complete(r)
}

// podChangeMatters drops pod updates that cannot change a selection (container
// statuses, conditions, IPs): on a busy cluster they are most pod events.
var podChangeMatters = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Pod)
		n, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return o.Status.Phase != n.Status.Phase || o.Spec.NodeName != n.Spec.NodeName ||
			!o.DeletionTimestamp.Equal(n.DeletionTimestamp) ||
			!equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(o.Annotations, n.Annotations) ||
			!equality.Semantic.DeepEqual(o.OwnerReferences, n.OwnerReferences)
	},
}

// policiesForNamespace maps a namespaced object to the policies whose namespace
// selector accepts its namespace (or that cannot be evaluated: they get the event too).
func (r *VolumeBackupPolicyReconciler) policiesForNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return nil
	}
	ns := &corev1.Namespace{}
	nsErr := r.Get(ctx, client.ObjectKey{Name: obj.GetNamespace()}, ns)
	var out []reconcile.Request
	for i := range policies.Items {
		p := &policies.Items[i]
		if nsErr == nil {
			if sel, err := r.Engine.ForPolicy(p); err == nil {
				if ok, err := sel.MatchNamespace(ns, nil); err == nil && !ok {
					continue
				}
			}
		}
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
	}
	return out
}

// policiesOfLocation maps a storage location to the policies that back up to it.
func (r *VolumeBackupPolicyReconciler) policiesOfLocation(ctx context.Context, obj client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, p := range policies.Items {
		if p.Spec.StorageLocation == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
		}
	}
	return out
}

func (r *VolumeBackupPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	var policies v1.VolumeBackupPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(policies.Items))
	for _, p := range policies.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
	}
	return out
}

func policyOfBackup(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[v1.LabelPolicy]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
}
