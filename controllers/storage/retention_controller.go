package storage

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

const (
	// FinalizerSnapshot on a PodVolumeBackup makes sure its snapshot is deleted from the
	// repository before the object goes. Retention (and deleting a policy with
	// deletionPolicy: Delete) adds it together with AnnotationDeleteSnapshot.
	FinalizerSnapshot = "backup.holdfast.dev/snapshot"
	// AnnotationDeleteSnapshot = "true" asks for the snapshot to be deleted with the
	// PodVolumeBackup. Without it, deleting a PodVolumeBackup keeps its data.
	AnnotationDeleteSnapshot = "backup.holdfast.dev/delete-snapshot"
	// FinalizerDeleteBackups on a VolumeBackupPolicy with deletionPolicy: Delete
	// deletes its backups (objects and snapshots) before the policy goes.
	FinalizerDeleteBackups = "backup.holdfast.dev/delete-backups"
)

// Event reasons of retention.
const (
	ReasonExpired          = "Expired"
	ReasonRetentionRefused = "RetentionRefused"
	ReasonSnapshotDeleted  = "SnapshotDeleted"
	ReasonSnapshotKept     = "SnapshotKept"
	ReasonDeleteFailed     = "SnapshotDeleteFailed"
	// ReasonRetentionPinned: retention keeps a backup a restore not yet ended reads.
	ReasonRetentionPinned = "RetentionPinned"
	// ReasonKeptLastGood: retention keeps the newest backup of a source with files.
	ReasonKeptLastGood = "KeptLastGood"
	// ReasonFilesDropped: a backup suddenly holds no or very few files.
	ReasonFilesDropped = "FilesDropped"
	// ReasonCollected: a Failed or Canceled backup, or an ended restore, was deleted
	// after FinishedTTL.
	ReasonCollected = "Collected"
)

// RetentionGroup is the retention decision for one source identity of one policy:
// the backups of one sourcePath in one namespace's repository.
type RetentionGroup struct {
	Namespace  string
	Repository string
	SourcePath string
	// Total is the number of Completed backups of the source, with the snapshots of
	// it whose PodVolumeBackup is gone.
	Total int
	// Expire names the PodVolumeBackups retention does not keep.
	Expire []string
	// ExpireSnapshots are the IDs of snapshots without a PodVolumeBackup that
	// retention does not keep.
	ExpireSnapshots []string
	// Refused is true when expiring them all would exceed maxExpirePercent; then
	// nothing of this source is expired and Message says why.
	Refused bool
	Message string
	// Pinned are backups (or orphan snapshots, "snapshot:<id>") the rules do not
	// keep but a restore not yet ended reads: a later pass expires them.
	Pinned []PinnedBackup
	// KeptLastGood names the backup the rules do not keep but that is the newest of
	// its source with good data, kept because newer ones hold no or very few files.
	KeptLastGood string
}

// PinnedBackup is a backup retention keeps for a restore that still reads it.
type PinnedBackup struct {
	Name, SnapshotID string
	// Restore is the PodVolumeRestore, "namespace/name".
	Restore string
}

// OrphanSnapshot is a snapshot of a policy that the store holds and no PodVolumeBackup
// records any more: its namespace was deleted and created again, or this is a new
// cluster. Retention counts it with the source's backups, so that it is expired in turn
// instead of staying forever.
type OrphanSnapshot struct {
	Namespace, Repository, SourcePath, ID string
	Time                                  time.Time
}

// orphanPrefix marks the retention candidates that are orphan snapshots.
const orphanPrefix = "snapshot:"

// PlanRetention applies a policy's retention to its Completed PodVolumeBackups and
// its orphan snapshots, per source identity. Besides what the rules keep, it keeps the
// snapshots that pins name (a restore not yet ended reads them) and the newest backup
// of each source with good data (files, not flagged FilesDropped). It is pure: the
// policy controller can call it to show refusals in the policy's status.
func PlanRetention(policy *v1.VolumeBackupPolicy, pvbs []v1.PodVolumeBackup, orphans []OrphanSnapshot, pins Pins) []RetentionGroup {
	if policy.Spec.Retention == nil {
		return nil
	}
	type key struct{ ns, repo, source string }
	groups := map[key][]RetentionCandidate{}
	snapshotOf := map[string]string{} // candidate name -> snapshot ID
	lastGood := map[key]RetentionCandidate{}
	for i := range pvbs {
		p := &pvbs[i]
		if p.Labels[v1.LabelPolicy] != identity.LabelValue(policy.Name) || p.Status.Phase != v1.RunCompleted || p.DeletionTimestamp != nil {
			continue
		}
		k := key{p.Namespace, p.Spec.Repository, p.Spec.SourcePath}
		c := RetentionCandidate{Name: p.Name, Time: BackupTime(p)}
		groups[k] = append(groups[k], c)
		snapshotOf[p.Namespace+"/"+p.Name] = p.Status.SnapshotID
		if good, ok := lastGood[k]; hasGoodData(p) && (!ok || c.newerThan(good)) {
			lastGood[k] = c
		}
	}
	for _, o := range orphans {
		k := key{o.Namespace, o.Repository, o.SourcePath}
		groups[k] = append(groups[k], RetentionCandidate{Name: orphanPrefix + o.ID, Time: o.Time, Orphan: true})
	}
	var out []RetentionGroup
	for k, backups := range groups {
		g := RetentionGroup{Namespace: k.ns, Repository: k.repo, SourcePath: k.source, Total: len(backups)}
		var expire []string
		for _, name := range Expired(backups, *policy.Spec.Retention) {
			id, orphan := strings.CutPrefix(name, orphanPrefix)
			if !orphan {
				id = snapshotOf[k.ns+"/"+name]
			}
			if restore, pinned := pins.restoreOf(k.ns, id); pinned {
				g.Pinned = append(g.Pinned, PinnedBackup{Name: name, SnapshotID: id, Restore: restore})
				continue
			}
			if good, ok := lastGood[k]; ok && !orphan && good.Name == name {
				g.KeptLastGood = name
				continue
			}
			expire = append(expire, name)
		}
		for _, name := range expire {
			if id, ok := strings.CutPrefix(name, orphanPrefix); ok {
				g.ExpireSnapshots = append(g.ExpireSnapshots, id)
			} else {
				g.Expire = append(g.Expire, name)
			}
		}
		if len(expire) > 0 && !GuardAllows(g.Total, len(expire), policy.Spec.Retention.MaxExpirePercent) {
			g.Refused = true
			g.Message = fmt.Sprintf("Retention refused to expire %d of the %d backups of %s in namespace %s: more than maxExpirePercent (%d%%) in one pass; raise maxExpirePercent or the keep counts if this is intended",
				len(expire), g.Total, g.SourcePath, g.Namespace, maxPercent(policy.Spec.Retention.MaxExpirePercent))
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].SourcePath < out[j].SourcePath
	})
	return out
}

func maxPercent(p int32) int32 {
	if p <= 0 {
		return 50
	}
	return p
}

// RetentionReconciler expires the backups a policy's retention no longer keeps, and
// deletes a policy's backups when the policy is deleted with deletionPolicy: Delete.
type RetentionReconciler struct {
	client.Client
	Recorder  record.EventRecorder
	Namespace string
	Pool      *Pool
	// Catalog lists what the repositories hold, for the orphan snapshots; nil counts
	// PodVolumeBackups only.
	Catalog *Catalog
	// FinishedTTL is how long Failed and Canceled backups stay (DefaultFinishedTTL).
	FinishedTTL time.Duration
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/status,verbs=get;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile applies one policy's retention, or its deletion policy when it is deleted.
func (r *RetentionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	policy := &v1.VolumeBackupPolicy{}
	if err := r.Get(ctx, req.NamespacedName, policy); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !policy.DeletionTimestamp.IsZero() {
		return r.deletePolicyBackups(ctx, policy)
	}
	wantFinalizer := policy.Spec.DeletionPolicy == v1.DeletionDelete
	if wantFinalizer != controllerutil.ContainsFinalizer(policy, FinalizerDeleteBackups) {
		patch := client.MergeFrom(policy.DeepCopy())
		if wantFinalizer {
			controllerutil.AddFinalizer(policy, FinalizerDeleteBackups)
		} else {
			controllerutil.RemoveFinalizer(policy, FinalizerDeleteBackups)
		}
		if err := r.Patch(ctx, policy, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("updating the finalizers of policy %s: %w", policy.Name, err)
		}
	}
	pvbs, err := r.policyBackups(ctx, policy.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if stale, err := r.checkFileCounts(ctx, pvbs); err != nil {
		return ctrl.Result{}, err
	} else if stale {
		return ctrl.Result{RequeueAfter: staleRetry}, nil
	}
	next, err := r.collectFailed(ctx, pvbs)
	if err != nil {
		return ctrl.Result{}, err
	}
	result := ctrl.Result{RequeueAfter: next}
	if policy.Spec.Retention == nil {
		return result, nil
	}
	byName := map[types.NamespacedName]*v1.PodVolumeBackup{}
	for i := range pvbs {
		byName[client.ObjectKeyFromObject(&pvbs[i])] = &pvbs[i]
	}
	orphans, err := r.orphans(ctx, policy, pvbs)
	if err != nil {
		return ctrl.Result{}, err
	}
	pins, err := restorePins(ctx, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	logger := log.FromContext(ctx)
	for _, g := range PlanRetention(policy, pvbs, orphans, pins) {
		for _, pin := range g.Pinned {
			logger.Info("retention keeps a snapshot a restore reads", "namespace", g.Namespace, "backup", pin.Name, "snapshot", pin.SnapshotID, "podVolumeRestore", pin.Restore)
			if p := byName[types.NamespacedName{Namespace: g.Namespace, Name: pin.Name}]; p != nil {
				r.Recorder.Event(p, corev1.EventTypeNormal, ReasonRetentionPinned,
					fmt.Sprintf("Kept past the retention of policy %s: PodVolumeRestore %s still reads snapshot %s; it expires once that restore has ended", policy.Name, pin.Restore, pin.SnapshotID))
			}
		}
		if p := byName[types.NamespacedName{Namespace: g.Namespace, Name: g.KeptLastGood}]; p != nil {
			r.Recorder.Event(p, corev1.EventTypeNormal, ReasonKeptLastGood,
				fmt.Sprintf("Kept past the retention of policy %s: the newest backup of %s with files; newer backups hold no or very few files (see their FilesDropped condition)", policy.Name, g.SourcePath))
		}
		if g.Refused {
			logger.Info("retention refused", "namespace", g.Namespace, "sourcePath", g.SourcePath, "total", g.Total, "expire", len(g.Expire))
			if newest := newestOf(pvbs, g); newest != nil {
				r.Recorder.Event(newest, corev1.EventTypeWarning, ReasonRetentionRefused, g.Message)
			}
			continue
		}
		for _, name := range g.Expire {
			p := byName[types.NamespacedName{Namespace: g.Namespace, Name: name}]
			if err := r.expire(ctx, p, fmt.Sprintf("Expired by the retention of policy %s", policy.Name)); err != nil {
				return ctrl.Result{}, err
			}
		}
		if len(g.ExpireSnapshots) > 0 {
			if err := r.expireOrphans(ctx, policy, g); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	return result, nil
}

// restorePins lists the snapshots that PodVolumeRestores not yet ended read.
func restorePins(ctx context.Context, c client.Reader) (Pins, error) {
	var list v1.PodVolumeRestoreList
	if err := c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing the PodVolumeRestores: %w", err)
	}
	return PinsOf(list.Items), nil
}

// orphans lists the policy's snapshots that no PodVolumeBackup records, in the
// repositories its PodVolumeBackups write to: taken in the namespace's own
// incarnation or one it adopts. Snapshots of an earlier namespace it does not adopt
// are another team's: they are kept. So are those in repositories the policy no
// longer writes to (a deleted namespace's backups stay as retention last left them).
func (r *RetentionReconciler) orphans(ctx context.Context, policy *v1.VolumeBackupPolicy, pvbs []v1.PodVolumeBackup) ([]OrphanSnapshot, error) {
	if r.Catalog == nil {
		return nil, nil
	}
	recorded := map[string]bool{}
	repos := map[types.NamespacedName]int32{} // repository -> snapshots its PodVolumeBackups record
	for i := range pvbs {
		p := &pvbs[i]
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Repository}
		if p.Status.SnapshotID != "" && !recorded[p.Status.SnapshotID] {
			recorded[p.Status.SnapshotID] = true
			repos[key]++
		} else if _, ok := repos[key]; !ok {
			repos[key] = 0
		}
	}
	var out []OrphanSnapshot
	for key, withObjects := range repos {
		brepo := &v1.BackupRepository{}
		if err := r.Get(ctx, key, brepo); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		// The repository's status counts what the store holds: no more snapshots than
		// PodVolumeBackups record means no orphan, and no need to read the store.
		var held int32
		for _, rp := range brepo.Status.RestorePoints {
			held += rp.Snapshots
		}
		if brepo.Status.RestorePointsTime != nil && brepo.Status.RestorePointsOmitted == 0 && held <= withObjects {
			continue
		}
		ns := &corev1.Namespace{}
		if err := r.Get(ctx, types.NamespacedName{Name: key.Namespace}, ns); err != nil {
			continue
		}
		if !conditions.IsReady(brepo.Status.Conditions) {
			continue
		}
		snaps, err := r.Catalog.Snapshots(ctx, brepo)
		if err != nil {
			// The repository's own status says why; the PodVolumeBackups are still
			// expired as before.
			log.FromContext(ctx).Info("cannot read the repository's snapshots for retention", "repository", key, "reason", err.Error())
			continue
		}
		for _, s := range snaps {
			if s.Tags[identity.TagPolicy] != policy.Name || recorded[s.ID] || !identity.Adopts(ns, s.Tags[identity.TagNamespaceUID]) {
				continue
			}
			out = append(out, OrphanSnapshot{Namespace: key.Namespace, Repository: key.Name, SourcePath: s.SourcePath, ID: s.ID, Time: s.StartTime})
		}
	}
	return out, nil
}

// expireOrphans deletes the orphan snapshots of a group from their repository.
func (r *RetentionReconciler) expireOrphans(ctx context.Context, policy *v1.VolumeBackupPolicy, g RetentionGroup) error {
	key := types.NamespacedName{Namespace: g.Namespace, Name: g.Repository}
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, key, brepo); err != nil {
		return client.IgnoreNotFound(err)
	}
	rep, err := openExisting(ctx, r.Client, r.Catalog.Secrets, r.Namespace, r.Pool, brepo)
	if err != nil {
		return err
	}
	defer rep.Close(ctx) //nolint:errcheck // returns the pool's loan
	for _, id := range g.ExpireSnapshots {
		if err := rep.Delete(ctx, id); err != nil {
			return fmt.Errorf("expiring snapshot %s of %s in %s: %w", id, g.SourcePath, key, err)
		}
		log.FromContext(ctx).Info("expired a snapshot whose PodVolumeBackup is gone", "repository", key, "sourcePath", g.SourcePath, "snapshot", id)
		r.Recorder.Event(policy, corev1.EventTypeNormal, ReasonExpired,
			fmt.Sprintf("Expired snapshot %s of %s in namespace %s (its PodVolumeBackup is gone) by the retention of policy %s", id, g.SourcePath, g.Namespace, policy.Name))
	}
	r.Catalog.Invalidate(key)
	return nil
}

// newestOf is the newest backup of a group, in retention's order.
func newestOf(pvbs []v1.PodVolumeBackup, g RetentionGroup) *v1.PodVolumeBackup {
	var newest *v1.PodVolumeBackup
	candidate := func(p *v1.PodVolumeBackup) RetentionCandidate {
		return RetentionCandidate{Name: p.Name, Time: BackupTime(p)}
	}
	for i := range pvbs {
		p := &pvbs[i]
		if p.Namespace == g.Namespace && p.Spec.SourcePath == g.SourcePath && p.Spec.Repository == g.Repository &&
			(newest == nil || candidate(p).newerThan(candidate(newest))) {
			newest = p
		}
	}
	return newest
}

// staleRetry is when a retention pass that met a cache behind the API server runs
// again.
const staleRetry = 2 * time.Second

func (r *RetentionReconciler) policyBackups(ctx context.Context, policy string) ([]v1.PodVolumeBackup, error) {
	var list v1.PodVolumeBackupList
	if err := r.List(ctx, &list, client.MatchingLabels{v1.LabelPolicy: identity.LabelValue(policy)}); err != nil {
		return nil, fmt.Errorf("listing the backups of policy %s: %w", policy, err)
	}
	return list.Items, nil
}

// expire marks a PodVolumeBackup so that its snapshot is deleted first, then deletes it.
func (r *RetentionReconciler) expire(ctx context.Context, p *v1.PodVolumeBackup, why string) error {
	if p.Annotations[AnnotationDeleteSnapshot] != "true" || !controllerutil.ContainsFinalizer(p, FinalizerSnapshot) {
		patch := client.MergeFrom(p.DeepCopy())
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[AnnotationDeleteSnapshot] = "true"
		controllerutil.AddFinalizer(p, FinalizerSnapshot)
		if err := r.Patch(ctx, p, patch); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	log.FromContext(ctx).Info("expiring backup", "podVolumeBackup", client.ObjectKeyFromObject(p), "snapshot", p.Status.SnapshotID)
	r.Recorder.Event(p, corev1.EventTypeNormal, ReasonExpired, why)
	return client.IgnoreNotFound(r.Delete(ctx, p))
}

// deletePolicyBackups runs when a policy is being deleted: with deletionPolicy: Delete
// it expires every backup of the policy and lets the policy go once they are gone.
func (r *RetentionReconciler) deletePolicyBackups(ctx context.Context, policy *v1.VolumeBackupPolicy) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(policy, FinalizerDeleteBackups) {
		return ctrl.Result{}, nil
	}
	pvbs, err := r.policyBackups(ctx, policy.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if policy.Spec.DeletionPolicy == v1.DeletionDelete {
		for i := range pvbs {
			if pvbs[i].DeletionTimestamp.IsZero() {
				if err := r.expire(ctx, &pvbs[i], fmt.Sprintf("Policy %s was deleted with deletionPolicy: Delete", policy.Name)); err != nil {
					return ctrl.Result{}, err
				}
			}
		}
		if len(pvbs) > 0 {
			return ctrl.Result{}, nil // PodVolumeBackups are watched; come back when they are gone
		}
	}
	patch := client.MergeFrom(policy.DeepCopy())
	controllerutil.RemoveFinalizer(policy, FinalizerDeleteBackups)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, policy, patch))
}

// SetupWithManager watches policies and their PodVolumeBackups (a backup completing or
// going away can change what retention keeps).
func (r *RetentionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeBackupPolicy{}).
		Watches(&v1.PodVolumeBackup{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if pvb, ok := o.(*v1.PodVolumeBackup); ok && identity.PolicyOfBackup(pvb) != "" {
				name := identity.PolicyOfBackup(pvb)
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
			}
			return nil
		})).
		// New restore points in a repository can be orphan snapshots to count.
		Watches(&v1.BackupRepository{}, handler.EnqueueRequestsFromMapFunc(r.policiesWritingTo)).
		// A restore that starts or ends pins or releases a snapshot of a repository.
		Watches(&v1.PodVolumeRestore{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			pvr := o.(*v1.PodVolumeRestore)
			return r.policiesWritingToRepository(ctx, pvr.Spec.SourceNamespace, pvr.Spec.Repository)
		}), builder.WithPredicates(restorePhaseChanged)).
		Named("retention").
		Complete(r)
}

// restorePhaseChanged passes the PodVolumeRestore events that can pin or release a
// snapshot: creation, deletion and a change of phase (not progress updates).
var restorePhaseChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1.PodVolumeRestore)
		n, ok2 := e.ObjectNew.(*v1.PodVolumeRestore)
		return !ok1 || !ok2 || o.Status.Phase != n.Status.Phase
	},
}

// policiesWritingTo lists the policies whose PodVolumeBackups write to a repository.
func (r *RetentionReconciler) policiesWritingTo(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesWritingToRepository(ctx, o.GetNamespace(), o.GetName())
}

// policiesWritingToRepository lists the policies whose PodVolumeBackups write to
// repository name in namespace.
func (r *RetentionReconciler) policiesWritingToRepository(ctx context.Context, namespace, repo string) []reconcile.Request {
	var list v1.PodVolumeBackupList
	if err := r.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil
	}
	seen := map[string]bool{}
	var reqs []reconcile.Request
	for _, p := range list.Items {
		if name := identity.PolicyOfBackup(&p); name != "" && p.Spec.Repository == repo && !seen[name] {
			seen[name] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
		}
	}
	return reqs
}

// SnapshotFinalizerReconciler deletes the snapshot of a PodVolumeBackup marked with
// AnnotationDeleteSnapshot before letting the object go. It waits while a restore not
// yet ended reads the snapshot. It never blocks deletion for ever: when the snapshot
// cannot be deleted for DeleteTimeout (the storage location or the key is gone, the
// repository is Stalled), or the backup or its policy carries
// AnnotationAbandonSnapshots, it lets the object go and leaves the snapshot in the
// store with a SnapshotKept Warning event that names it.
type SnapshotFinalizerReconciler struct {
	client.Client
	Secrets   client.Reader
	Recorder  record.EventRecorder
	Namespace string
	Pool      *Pool
	// DeleteTimeout bounds how long a deleted PodVolumeBackup waits for its snapshot
	// to be deleted (DefaultSnapshotDeleteTimeout).
	DeleteTimeout time.Duration
}

// AnnotationAbandonSnapshots = "true" on a PodVolumeBackup, or on the
// VolumeBackupPolicy it belongs to, lets the backup go without deleting its snapshot
// (which stays in the store, named in a SnapshotKept event): the way out when the
// store or the repository key is gone for good.
const AnnotationAbandonSnapshots = "backup.holdfast.dev/abandon-snapshots"

// DefaultSnapshotDeleteTimeout is how long a deleted PodVolumeBackup waits for its
// snapshot to be deleted before it goes without.
const DefaultSnapshotDeleteTimeout = time.Hour

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumerestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=secrets,verbs=get;list;watch

// Reconcile deletes the snapshot, then removes the finalizer.
func (r *SnapshotFinalizerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &v1.PodVolumeBackup{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.DeletionTimestamp.IsZero() || !controllerutil.ContainsFinalizer(p, FinalizerSnapshot) {
		return ctrl.Result{}, nil
	}
	if p.Annotations[AnnotationDeleteSnapshot] == "true" && p.Status.SnapshotID != "" {
		// Abandoning keeps the snapshot, so a restore that reads it is no reason to wait.
		abandoned, err := r.abandoned(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		if abandoned != "" {
			r.keep(ctx, p, abandoned)
		} else {
			pins, err := restorePins(ctx, r.Client)
			if err != nil {
				return ctrl.Result{}, err
			}
			if restore, pinned := pins.restoreOf(p.Namespace, p.Status.SnapshotID); pinned {
				// PodVolumeRestores are watched: the restore ending brings this back.
				log.FromContext(ctx).Info("waiting for a restore to end before deleting its snapshot", "snapshot", p.Status.SnapshotID, "podVolumeRestore", restore)
				return ctrl.Result{}, nil
			}
			if wait, err := r.deleteSnapshot(ctx, p); err != nil || wait > 0 {
				return ctrl.Result{RequeueAfter: wait}, err
			}
		}
	}
	patch := client.MergeFrom(p.DeepCopy())
	controllerutil.RemoveFinalizer(p, FinalizerSnapshot)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, p, patch))
}

// abandoned says why the snapshot is to be left in the store ("" if not): the backup
// or its policy carries AnnotationAbandonSnapshots.
func (r *SnapshotFinalizerReconciler) abandoned(ctx context.Context, p *v1.PodVolumeBackup) (string, error) {
	if p.Annotations[AnnotationAbandonSnapshots] == "true" {
		return fmt.Sprintf("the PodVolumeBackup is annotated %s", AnnotationAbandonSnapshots), nil
	}
	name := identity.PolicyOfBackup(p)
	if name == "" {
		return "", nil
	}
	policy := &v1.VolumeBackupPolicy{}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, policy); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	if policy.Annotations[AnnotationAbandonSnapshots] == "true" {
		return fmt.Sprintf("policy %s is annotated %s", name, AnnotationAbandonSnapshots), nil
	}
	return "", nil
}

// keep lets the snapshot stay in the store and says so, naming it.
func (r *SnapshotFinalizerReconciler) keep(ctx context.Context, p *v1.PodVolumeBackup, why string) {
	msg := fmt.Sprintf("Snapshot %s of %s stays in repository %s on storage location %s, not deleted: %s",
		p.Status.SnapshotID, p.Spec.SourcePath, p.Spec.Repository, p.Spec.StorageLocation, why)
	log.FromContext(ctx).Info("leaving a snapshot in the store", "podVolumeBackup", client.ObjectKeyFromObject(p), "snapshot", p.Status.SnapshotID, "reason", why)
	r.Recorder.Event(p, corev1.EventTypeWarning, ReasonSnapshotKept, msg)
}

func (r *SnapshotFinalizerReconciler) deleteTimeout() time.Duration {
	if r.DeleteTimeout > 0 {
		return r.DeleteTimeout
	}
	return DefaultSnapshotDeleteTimeout
}

// deleteSnapshot deletes the snapshot and returns 0 once it is gone or can never be
// deleted: its repository was deleted (as when the namespace goes), or it could not
// be deleted for DeleteTimeout. Then the data stays and a SnapshotKept event says so,
// rather than blocking deletion for ever. Otherwise it returns when to try again.
func (r *SnapshotFinalizerReconciler) deleteSnapshot(ctx context.Context, p *v1.PodVolumeBackup) (time.Duration, error) {
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Repository}, brepo); err != nil {
		if apierrors.IsNotFound(err) {
			r.keep(ctx, p, fmt.Sprintf("repository %s no longer exists", p.Spec.Repository))
			return 0, nil
		}
		return 0, err
	}
	rep, err := openExisting(ctx, r.Client, r.Secrets, r.Namespace, r.Pool, brepo)
	if err == nil {
		err = rep.Delete(ctx, p.Status.SnapshotID)
		_ = rep.Close(ctx) // returns the pool's loan
	}
	if err != nil {
		timeout := r.deleteTimeout()
		waited := time.Since(p.DeletionTimestamp.Time)
		if waited >= timeout {
			r.keep(ctx, p, fmt.Sprintf("it could not be deleted for %s (%v); delete it from the store by hand if it must go, or restore the repository's storage location and key", timeout, err))
			return 0, nil
		}
		r.Recorder.Event(p, corev1.EventTypeWarning, ReasonDeleteFailed, fmt.Sprintf("Deleting snapshot %s failed, will retry; after %s it is left in the store: %v", p.Status.SnapshotID, timeout, err))
		return min(storeRetry, timeout-waited), nil
	}
	log.FromContext(ctx).Info("deleted snapshot", "snapshot", p.Status.SnapshotID, "repository", brepo.Status.URL)
	r.Recorder.Event(p, corev1.EventTypeNormal, ReasonSnapshotDeleted, fmt.Sprintf("Deleted snapshot %s from %s", p.Status.SnapshotID, brepo.Status.URL))
	return 0, nil
}

// openExisting borrows from the pool a repository that the repository controller made
// Ready (Close returns it); it never initialises.
func openExisting(ctx context.Context, c client.Client, secrets client.Reader, namespace string, pool *Pool, brepo *v1.BackupRepository) (repository.Repository, error) {
	if !conditions.IsReady(brepo.Status.Conditions) || brepo.Status.KeySecretName == "" {
		return nil, fmt.Errorf("repository %s/%s is not Ready", brepo.Namespace, brepo.Name)
	}
	bsl := &v1.BackupStorageLocation{}
	if err := c.Get(ctx, types.NamespacedName{Name: brepo.Spec.StorageLocation}, bsl); err != nil {
		return nil, err
	}
	store, _, err := storeFor(ctx, secrets, namespace, bsl)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{}
	if err := secrets.Get(ctx, types.NamespacedName{Namespace: namespace, Name: brepo.Status.KeySecretName}, secret); err != nil {
		return nil, err
	}
	password, err := repository.PasswordFromSecret(secret)
	if err != nil {
		return nil, err
	}
	return pool.Open(ctx, client.ObjectKeyFromObject(brepo).String(), repository.Config{
		Store: store, Uploader: brepo.Spec.Uploader, Namespace: brepo.Namespace, Password: password, Owner: repository.ManagerOwner})
}

// SetupWithManager watches PodVolumeBackups that carry the finalizer and are being
// deleted, the restores that pin their snapshots, and their policies (for
// AnnotationAbandonSnapshots).
func (r *SnapshotFinalizerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	deleting := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return !o.GetDeletionTimestamp().IsZero() && controllerutil.ContainsFinalizer(o, FinalizerSnapshot)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.PodVolumeBackup{}, builder.WithPredicates(deleting)).
		Watches(&v1.PodVolumeRestore{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			pvr := o.(*v1.PodVolumeRestore)
			return r.deletingBackups(ctx, client.InNamespace(pvr.Spec.SourceNamespace), func(p *v1.PodVolumeBackup) bool {
				return p.Status.SnapshotID == pvr.Spec.SnapshotID
			})
		}), builder.WithPredicates(restorePhaseChanged)).
		Watches(&v1.VolumeBackupPolicy{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.deletingBackups(ctx, client.MatchingLabels{v1.LabelPolicy: identity.LabelValue(o.GetName())}, func(p *v1.PodVolumeBackup) bool { return identity.PolicyOfBackup(p) == o.GetName() })
		})).
		Named("snapshotfinalizer").
		Complete(r)
}

// deletingBackups lists the PodVolumeBackups being deleted with the snapshot
// finalizer that match.
func (r *SnapshotFinalizerReconciler) deletingBackups(ctx context.Context, opt client.ListOption, match func(*v1.PodVolumeBackup) bool) []reconcile.Request {
	var list v1.PodVolumeBackupList
	if err := r.List(ctx, &list, opt); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		p := &list.Items[i]
		if !p.DeletionTimestamp.IsZero() && controllerutil.ContainsFinalizer(p, FinalizerSnapshot) && match(p) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)})
		}
	}
	return reqs
}
