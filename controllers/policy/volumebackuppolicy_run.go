package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

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
