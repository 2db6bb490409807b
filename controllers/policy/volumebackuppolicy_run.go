package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
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
			if err := r.staleView(ctx, s); err != nil {
				return err
			}
			st.LastRunNowToken = token
			r.startRun(ctx, s, TriggerRunNow, token, s.now)
		case s.schedule != nil:
			after := p.CreationTimestamp.UTC()
			if st.LastScheduleTime != nil {
				after = st.LastScheduleTime.UTC()
			}
			if tick, due := s.schedule.latestDue(after, s.now); due {
				if err := r.staleView(ctx, s); err != nil {
					return err
				}
				st.LastScheduleTime = &metav1.Time{Time: tick}
				r.startRun(ctx, s, TriggerSchedule, "", tick)
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

// staleView stops the pass, with a conditions.Wait of a second and nothing written,
// when the API server holds a newer version of the policy than the cache gave it:
// consuming a run-now token or a tick from a stale view would start the run twice.
func (r *VolumeBackupPolicyReconciler) staleView(ctx context.Context, s *scope) error {
	if r.APIReader == nil {
		return nil
	}
	fresh := &v1.VolumeBackupPolicy{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.policy), fresh); err != nil {
		return client.IgnoreNotFound(err)
	}
	if fresh.ResourceVersion == s.policy.ResourceVersion {
		return nil
	}
	s.stale = true
	return conditions.Wait("StaleCache", time.Second, "the cache is behind the API server")
}

func (s *scope) requeueAt(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// startRun records a new run in status.lastRun. A run whose storage location cannot
// take backups ends at once, Failed with the location's sentence. A previous run that
// was still creating is superseded: the volumes it had not started yet are targets of
// the new run, which says so in an event.
func (r *VolumeBackupPolicyReconciler) startRun(ctx context.Context, s *scope, trigger, token string, at time.Time) {
	p := s.policy
	if prev := p.Status.LastRun; prev != nil && prev.Outcome == v1.RunOutcomeInProgress && prev.CreationEndTime == nil {
		r.supersede(ctx, s, prev, runName(p.Name, at, trigger, token))
	}
	run := &v1.RunSummary{
		Name:      runName(p.Name, at, trigger, token),
		Trigger:   trigger,
		Outcome:   v1.RunOutcomeInProgress,
		StartTime: &metav1.Time{Time: at},
	}
	p.Status.LastRun = run
	applyInFlight(s, run.Name)
	if s.locationProblem != "" {
		run.Outcome = v1.RunOutcomeFailed
		run.CreationEndTime = &metav1.Time{Time: s.now}
		run.CompletionTime = &metav1.Time{Time: s.now}
		run.VolumesSkipped = int32(len(s.sel.targets)) + p.Status.SkippedVolumes
		run.Message = "no volume was backed up: " + s.locationProblem
		r.event(ctx, p, corev1.EventTypeWarning, "RunFailed", "run %s (%s) Failed: %s", run.Name, trigger, run.Message)
		return
	}
	r.event(ctx, p, corev1.EventTypeNormal, "RunStarted", "run %s started (%s): %d volumes selected, %d skipped",
		run.Name, trigger, len(s.sel.targets), p.Status.SkippedVolumes)
}

// supersede reports, when a new run starts while prev is still creating, what becomes
// of prev's volumes: those it has not started yet are the new run's (they have no
// backup in flight, so the new run selects them), those it started finish and are
// skipped by the new run as InFlight. Nothing of prev is dropped without a word. The
// new run starts even when prev's backups cannot be listed (its token or tick is
// already consumed); the event then gives no counts.
func (r *VolumeBackupPolicyReconciler) supersede(ctx context.Context, s *scope, prev *v1.RunSummary, next string) {
	existing, err := r.runBackups(ctx, s.policy, prev.Name)
	if err != nil {
		r.event(ctx, s.policy, corev1.EventTypeWarning, "RunSuperseded",
			"run %s was still starting its volumes when run %s started: run %s backs up the volumes it had not started (%v)", prev.Name, next, next, err)
		return
	}
	names := map[string]bool{}
	for _, b := range existing {
		names[b.Namespace+"/"+b.Name] = true
	}
	notStarted := 0
	for _, t := range s.sel.targets {
		if !names[t.pod.Namespace+"/"+backupName(prev.Name, t)] {
			notStarted++
		}
	}
	r.event(ctx, s.policy, corev1.EventTypeWarning, "RunSuperseded",
		"run %s was still starting its volumes when run %s started: run %s backs up the %d volumes it had not started; its %d started backups finish and run %s skips them as %s",
		prev.Name, next, next, notStarted, len(existing), next, SkipInFlight)
}

// event emits an event on the policy and logs the same sentence.
func (r *VolumeBackupPolicyReconciler) event(ctx context.Context, p *v1.VolumeBackupPolicy, typ, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Recorder.Event(p, typ, reason, msg)
	log.FromContext(ctx).Info(msg, "reason", reason)
}

// runBackups lists the PodVolumeBackups of one run of the policy.
func (r *VolumeBackupPolicyReconciler) runBackups(ctx context.Context, p *v1.VolumeBackupPolicy, run string) ([]v1.PodVolumeBackup, error) {
	return listRunBackups(ctx, r.Client, p, run)
}

// listRunBackups lists them from c; from the cache they are the cache's own objects
// (no copy): callers read them and must not change them.
func listRunBackups(ctx context.Context, c client.Reader, p *v1.VolumeBackupPolicy, run string) ([]v1.PodVolumeBackup, error) {
	var pvbs v1.PodVolumeBackupList
	if err := c.List(ctx, &pvbs, client.MatchingLabels{v1.LabelPolicy: policyLabel(p.Name), v1.LabelRun: run}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the PodVolumeBackups of run %s: %w", run, err)
	}
	return pvbs.Items, nil
}

// createGrace is how long after its jitter window a run keeps retrying the
// PodVolumeBackups it could not create; createRetry is how often.
const (
	createGrace = time.Minute
	createRetry = 10 * time.Second
)

// createDueBackups creates, while the last run is creating, the PodVolumeBackups
// whose jitter offset has passed, and the BackupRepository of each namespace they are
// in. Names are deterministic, so creating twice is harmless. A create that fails (a
// quota, an admission policy) does not stop the others: it is recorded in
// lastRun.failures with the API server's message and retried every createRetry until
// the creation window (jitter + createGrace) closes. Creation ends when every volume
// has its backup and the jitter window has passed, or when the window closes; then
// volumesSelected is fixed and the volumes still without a backup stay CreateFailed.
// Sets Reconciling while the run is creating.
func (r *VolumeBackupPolicyReconciler) createDueBackups(ctx context.Context, s *scope) error {
	p := s.policy
	run := p.Status.LastRun
	if run == nil || run.Outcome != v1.RunOutcomeInProgress || run.StartTime == nil || run.CreationEndTime != nil {
		return nil
	}
	jitter := jitterFor(s, run)
	grace := createGrace
	for _, t := range s.sel.targets {
		if t.unmounted != nil {
			// The reader pods of claims no pod uses have until then to run.
			grace = max(grace, r.Reader.StartDeadline())
			break
		}
	}
	windowEnd := run.StartTime.Add(jitter + grace)
	existing, err := r.runBackups(ctx, p, run.Name)
	if err != nil {
		return err
	}
	created := map[string]bool{}
	for _, b := range existing {
		created[b.Namespace+"/"+b.Name] = true
	}
	uploader := p.Spec.Uploader
	if uploader == "" {
		uploader = v1.UploaderKopia
	}
	repo := identity.RepositoryName(p.Spec.StorageLocation, uploader)
	var failed, invalidHooks []string
	var due []dueBackup
	notDue := 0
	for _, t := range s.sel.targets {
		name := backupName(run.Name, t)
		key := t.pod.Namespace + "/" + name
		if created[key] {
			continue
		}
		hooks, hookErr := r.hooksOf(ctx, s, t)
		if hookErr != nil {
			// Not retried: the pod's annotations or the policy's hooks must change.
			invalidHooks = append(invalidHooks, volumeKey(t)+": "+hookErr.Error())
			continue
		}
		if at := run.StartTime.Add(jitterOffset(jitter, t.pod.Namespace, jitterKey(t, hooks != nil))); at.After(s.now) {
			notDue++
			s.requeueAt(at.Sub(s.now))
			continue
		}
		if t.unmounted != nil {
			// Past the deadline no reader pod is created: a pass that saw the run
			// still creating (a cache behind) would start one again.
			late := !s.now.Before(windowEnd)
			reader, why, err := r.ensureReader(ctx, s, run.Name, t, !late)
			switch {
			case err != nil:
				failed = append(failed, t.key()+": "+err.Error())
				continue
			case reader == nil && late:
				failed = append(failed, readerNotRun(t, run.Name, windowEnd.Sub(run.StartTime.Time), why))
				continue
			case reader == nil:
				// The reader pod's watch brings the policy back when it runs.
				notDue++
				s.requeueAt(min(createRetry, windowEnd.Sub(s.now)))
				continue
			}
			t.pod = reader
		}
		due = append(due, dueBackup{target: t, name: name, key: key, hooks: hooks})
	}
	for i, err := range r.createBackups(ctx, p, run.Name, repo, uploader, due) {
		if err != nil {
			failed = append(failed, volumeKey(due[i].target)+": "+err.Error())
			continue
		}
		created[due[i].key] = true
	}
	s.created = created
	hadFailures := failuresOf(run, ReasonCreateFailed) > 0
	run.Failures = setFailures(run.Failures, ReasonCreateFailed, failed)
	hadInvalidHooks := failuresOf(run, ReasonInvalidHook) > 0
	run.Failures = setFailures(run.Failures, ReasonInvalidHook, invalidHooks)
	run.VolumesSelected = int32(len(created) + len(failed) + len(invalidHooks) + notDue)
	if len(invalidHooks) > 0 && !hadInvalidHooks {
		r.event(ctx, p, corev1.EventTypeWarning, ReasonInvalidHook, "run %s did not back up %d volumes whose pod's hooks cannot run; first %s",
			run.Name, len(invalidHooks), invalidHooks[0])
	}
	run.VolumesSkipped = p.Status.SkippedVolumes
	if len(failed) > 0 && !hadFailures {
		r.event(ctx, p, corev1.EventTypeWarning, "BackupCreateFailed",
			"run %s could not create the backups of %d volumes, retrying until %s; first %s",
			run.Name, len(failed), windowEnd.Format(time.RFC3339), failed[0])
	}
	switch {
	case !s.now.Before(windowEnd), !s.now.Before(run.StartTime.Add(jitter)) && notDue == 0 && len(failed) == 0:
		// Creation ends: every volume has its backup, or the window closed and the
		// volumes without one count as failed.
		run.CreationEndTime = &metav1.Time{Time: s.now}
		return nil
	case len(failed) > 0:
		s.requeueAt(min(createRetry, windowEnd.Sub(s.now)))
		s.creating = true
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonRunInProgress,
			fmt.Sprintf("run %s could not create the backups of %d volumes and retries until %s; first %s",
				run.Name, len(failed), windowEnd.Format(time.RFC3339), failed[0]))
	default:
		s.requeueAt(run.StartTime.Add(jitter).Sub(s.now))
		if notDue == 0 {
			return nil // every volume has its backup; creation ends with the jitter window
		}
		s.creating = true
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonRunInProgress,
			fmt.Sprintf("run %s is starting its volumes over the %s jitter window", run.Name, jitter))
	}
	return nil
}

func volumeKey(t target) string { return t.key() }

// dueBackup is a PodVolumeBackup createDueBackups is to create in this pass.
type dueBackup struct {
	target
	name, key string
	hooks     *v1.ResolvedHooks
}

// DefaultMaxConcurrentCreates is how many creates a run has in flight at once when
// the reconciler does not say: enough that the API server, not the round trips of one
// create after another, sets the pace (the control-plane bench's bare client reaches
// its rate at 16), few enough to stay far below the API server's 200 mutating
// requests in flight.
const DefaultMaxConcurrentCreates = 16

// createBackups creates the BackupRepository of each namespace of due (one
// create, or one cache read if it exists) and each due PodVolumeBackup, with at most
// MaxConcurrentCreates requests in flight: one after another, 10,000 creates take as
// many round trips, and the API server sits idle between them. A namespace's backups
// start as soon as its own repository exists, not after every namespace's: the
// repositories go ahead in the order of due, so the two kinds of create overlap and
// the run has no pause in the middle where the last repositories finish. It returns
// one error per due backup, nil for those that exist now; a namespace whose
// repository cannot be created fails each of its backups without trying them.
func (r *VolumeBackupPolicyReconciler) createBackups(ctx context.Context, p *v1.VolumeBackupPolicy, run, repo string, uploader v1.Uploader, due []dueBackup) []error {
	limit := r.MaxConcurrentCreates
	if limit <= 0 {
		limit = DefaultMaxConcurrentCreates
	}
	type namespaceRepo struct {
		name  string
		err   error
		ready chan struct{} // closed once err is set
	}
	var namespaces []*namespaceRepo
	byName := map[string]*namespaceRepo{}
	for _, d := range due {
		if byName[d.pod.Namespace] == nil {
			ns := &namespaceRepo{name: d.pod.Namespace, ready: make(chan struct{})}
			byName[ns.name] = ns
			namespaces = append(namespaces, ns)
		}
	}
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, ns := range namespaces {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-slots; close(ns.ready); wg.Done() }()
				ns.err = r.ensureRepository(ctx, p, ns.name, repo, uploader)
			}()
		}
	}()
	errs := make([]error, len(due))
	for i, d := range due {
		ns := byName[d.pod.Namespace]
		<-ns.ready
		if ns.err != nil {
			errs[i] = ns.err
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			errs[i] = r.createBackup(ctx, p, run, d.name, repo, uploader, d.target, d.hooks)
		}()
	}
	wg.Wait()
	return errs
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
			v1.LabelStorageLocation: locationLabel(p.Spec.StorageLocation), v1.LabelManagedBy: v1.ManagedByValue}},
		Spec: v1.BackupRepositorySpec{StorageLocation: p.Spec.StorageLocation, Uploader: uploader},
	}
	if err := r.Create(ctx, repo, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating BackupRepository %s/%s: %w", ns, name, err)
	}
	return nil
}

func (r *VolumeBackupPolicyReconciler) createBackup(ctx context.Context, p *v1.VolumeBackupPolicy, run, name, repo string, uploader v1.Uploader, t target, hooks *v1.ResolvedHooks) error {
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
			Name:      name,
			Namespace: t.pod.Namespace,
			Labels: map[string]string{
				v1.LabelPolicy: policyLabel(p.Name), v1.LabelRun: run,
				v1.LabelStorageLocation: locationLabel(p.Spec.StorageLocation), v1.LabelManagedBy: v1.ManagedByValue,
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
			Files:            p.Spec.Files.DeepCopy(),
			Tags:             map[string]string{identity.TagPolicy: p.Name, identity.TagRun: run, identity.TagNamespaceUID: string(ns.UID)},
			ParentSnapshotID: parent,
		},
	}
	if hooks != nil {
		pvb.Spec.Hooks = hooks
		pvb.Labels[v1.LabelHooks] = "true"
	}
	if err := r.Create(ctx, pvb, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PodVolumeBackup %s/%s: %w", pvb.Namespace, pvb.Name, err)
	}
	return nil
}

// reconcileLastRun aggregates the last run's PodVolumeBackups into status.lastRun
// while it is in progress, decides its outcome with runOutcome once its creation has
// ended, and emits an event when it ends. An ended run is history and is not counted
// again. Sets no condition.
func (r *VolumeBackupPolicyReconciler) reconcileLastRun(ctx context.Context, s *scope) error {
	p := s.policy
	run := p.Status.LastRun
	if run == nil || run.Outcome != v1.RunOutcomeInProgress {
		// No run, or one that ended: its summary is history. Counted again once its
		// backups went with their namespace, an ended run would read as nothing backed
		// up, and as in progress again as soon as the namespace's pods came back, whose
		// backups it would then create under its old name.
		return nil
	}
	pvbs, err := r.runBackups(ctx, p, run.Name)
	if err != nil {
		return err
	}
	createFailed := failuresOf(run, ReasonCreateFailed) + failuresOf(run, ReasonInvalidHook)
	if run.CreationEndTime != nil && int32(len(pvbs))+createFailed < run.VolumesSelected && r.APIReader != nil {
		// A selected volume has no backup in the cache. It may have been deleted, or
		// the cache may not have seen its creation in an earlier pass yet: the event of
		// this policy's own status update can come before the backup's. Only the API
		// server can say a backup is gone.
		if pvbs, err = listRunBackups(ctx, r.APIReader, p, run.Name); err != nil {
			return err
		}
	}
	sum := summarize(pvbs)
	// Backups created in this pass may not be in the cache yet: they are unfinished.
	for key := range s.created {
		if !sum.names[key] {
			sum.total++
			sum.unfinished++
		}
	}
	run.VolumesTotal, run.VolumesCompleted, run.BytesUploaded = sum.total, sum.completed, sum.bytes
	run.VolumesFailed = sum.failed + createFailed
	run.HooksFailed = sum.hooksFailed
	run.Failures = mergeFailures(run.Failures, sum.failures)
	if run.CreationEndTime == nil {
		return nil // still creating: InProgress
	}
	c := runCounts{selected: run.VolumesSelected, backedUp: sum.completed, failed: run.VolumesFailed,
		skipped: run.VolumesSkipped, pending: sum.unfinished, hooksFailed: sum.hooksFailed, firstHook: sum.firstHook}
	run.Outcome = runOutcome(c)
	if run.Outcome == v1.RunOutcomeInProgress {
		return nil
	}
	run.Message = runMessage(c, run.Failures)
	run.CompletionTime = sum.lastDone
	if run.CompletionTime == nil {
		run.CompletionTime = &metav1.Time{Time: s.now}
	}
	typ := corev1.EventTypeNormal
	if run.Outcome != v1.RunOutcomeSucceeded {
		typ = corev1.EventTypeWarning
	}
	msg := fmt.Sprintf("%d of %d volumes backed up, %d failed, %d skipped, %d bytes uploaded",
		sum.completed, run.VolumesSelected, run.VolumesFailed, run.VolumesSkipped, sum.bytes)
	if run.Message != "" {
		msg = run.Message
	}
	r.event(ctx, p, typ, "Run"+string(run.Outcome), "run %s %s: %s", run.Name, run.Outcome, msg)
	return nil
}

func jitterFor(s *scope, run *v1.RunSummary) time.Duration {
	if s.schedule != nil && run.Trigger == TriggerSchedule {
		return s.schedule.jitter
	}
	return 0
}

// runName is <policy>-<UTC time>[n<token hash>], at most 63 characters (it is a label
// value). A run started by run-now ends in "n" and 6 hex digits of its token, so that it
// never shares a name with a schedule tick, and two tokens in the same second are two
// runs, while the same token (a pass retried after a crash) is the same run.
func runName(policy string, at time.Time, trigger, token string) string {
	suffix := at.UTC().Format("20060102150405")
	if trigger == TriggerRunNow {
		suffix += RunNowSuffix(token)
	}
	maxPrefix := 63 - 1 - len(suffix)
	if len(policy) > maxPrefix {
		sum := sha256.Sum256([]byte(policy))
		policy = strings.TrimRight(policy[:maxPrefix-9], "-.") + "-" + hex.EncodeToString(sum[:])[:8]
	}
	return policy + "-" + suffix
}

// RunNowSuffix is how the name of the run a run-now token starts ends: "n" and 6 hex
// digits of the token's SHA-256. kubectl holdfast run finds its run by it.
func RunNowSuffix(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "n" + hex.EncodeToString(sum[:])[:6]
}
