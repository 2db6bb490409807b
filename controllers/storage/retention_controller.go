package storage

import (
	"context"
	"errors"
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
// its orphan snapshots, per source identity. It is pure: the policy controller can
// call it to show refusals in the policy's status.
func PlanRetention(policy *v1.VolumeBackupPolicy, pvbs []v1.PodVolumeBackup, orphans []OrphanSnapshot) []RetentionGroup {
	if policy.Spec.Retention == nil {
		return nil
	}
	type key struct{ ns, repo, source string }
	groups := map[key][]RetentionCandidate{}
	for i := range pvbs {
		p := &pvbs[i]
		if p.Labels[v1.LabelPolicy] != identity.LabelValue(policy.Name) || p.Status.Phase != v1.RunCompleted || p.DeletionTimestamp != nil {
			continue
		}
		k := key{p.Namespace, p.Spec.Repository, p.Spec.SourcePath}
		groups[k] = append(groups[k], RetentionCandidate{Name: p.Name, Time: backupTime(p)})
	}
	for _, o := range orphans {
		k := key{o.Namespace, o.Repository, o.SourcePath}
		groups[k] = append(groups[k], RetentionCandidate{Name: orphanPrefix + o.ID, Time: o.Time})
	}
	var out []RetentionGroup
	for k, backups := range groups {
		g := RetentionGroup{Namespace: k.ns, Repository: k.repo, SourcePath: k.source, Total: len(backups)}
		expire := Expired(backups, *policy.Spec.Retention)
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

func backupTime(p *v1.PodVolumeBackup) time.Time {
	if p.Status.StartTime != nil {
		return p.Status.StartTime.Time
	}
	return p.CreationTimestamp.Time
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
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=volumebackuppolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/finalizers,verbs=update
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
	if policy.Spec.Retention == nil {
		return ctrl.Result{}, nil
	}
	pvbs, err := r.policyBackups(ctx, policy.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	byName := map[types.NamespacedName]*v1.PodVolumeBackup{}
	for i := range pvbs {
		byName[client.ObjectKeyFromObject(&pvbs[i])] = &pvbs[i]
	}
	orphans, err := r.orphans(ctx, policy, pvbs)
	if err != nil {
		return ctrl.Result{}, err
	}
	logger := log.FromContext(ctx)
	for _, g := range PlanRetention(policy, pvbs, orphans) {
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
	return ctrl.Result{}, nil
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

func newestOf(pvbs []v1.PodVolumeBackup, g RetentionGroup) *v1.PodVolumeBackup {
	var newest *v1.PodVolumeBackup
	for i := range pvbs {
		p := &pvbs[i]
		if p.Namespace == g.Namespace && p.Spec.SourcePath == g.SourcePath && p.Spec.Repository == g.Repository &&
			(newest == nil || backupTime(p).After(backupTime(newest))) {
			newest = p
		}
	}
	return newest
}

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
		Named("retention").
		Complete(r)
}

// policiesWritingTo lists the policies whose PodVolumeBackups write to a repository.
func (r *RetentionReconciler) policiesWritingTo(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1.PodVolumeBackupList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	seen := map[string]bool{}
	var reqs []reconcile.Request
	for _, p := range list.Items {
		if name := identity.PolicyOfBackup(&p); name != "" && p.Spec.Repository == o.GetName() && !seen[name] {
			seen[name] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
		}
	}
	return reqs
}

// SnapshotFinalizerReconciler deletes the snapshot of a PodVolumeBackup marked with
// AnnotationDeleteSnapshot before letting the object go.
type SnapshotFinalizerReconciler struct {
	client.Client
	Secrets   client.Reader
	Recorder  record.EventRecorder
	Namespace string
	Pool      *Pool
}

// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups/finalizers,verbs=update
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backuprepositories,verbs=get;list;watch
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
		done, err := r.deleteSnapshot(ctx, p)
		if err != nil || !done {
			return ctrl.Result{RequeueAfter: storeRetry}, err
		}
	}
	patch := client.MergeFrom(p.DeepCopy())
	controllerutil.RemoveFinalizer(p, FinalizerSnapshot)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, p, patch))
}

// deleteSnapshot returns true once the snapshot is gone or can never be deleted (its
// repository was deleted, as when the namespace goes: then the data stays and an event
// says so, rather than blocking the namespace's deletion forever).
func (r *SnapshotFinalizerReconciler) deleteSnapshot(ctx context.Context, p *v1.PodVolumeBackup) (bool, error) {
	brepo := &v1.BackupRepository{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Repository}, brepo); err != nil {
		if apierrors.IsNotFound(err) {
			r.Recorder.Event(p, corev1.EventTypeWarning, ReasonSnapshotKept, fmt.Sprintf("Snapshot %s was not deleted: repository %s no longer exists", p.Status.SnapshotID, p.Spec.Repository))
			return true, nil
		}
		return false, err
	}
	rep, err := openExisting(ctx, r.Client, r.Secrets, r.Namespace, r.Pool, brepo)
	if err == nil {
		err = rep.Delete(ctx, p.Status.SnapshotID)
		_ = rep.Close(ctx) // returns the pool's loan
	}
	if err != nil {
		r.Recorder.Event(p, corev1.EventTypeWarning, ReasonDeleteFailed, fmt.Sprintf("Deleting snapshot %s failed, will retry: %v", p.Status.SnapshotID, err))
		var re *repository.Error
		if errors.As(err, &re) {
			return false, nil // logged via the event; retried after storeRetry
		}
		return false, err
	}
	log.FromContext(ctx).Info("deleted snapshot", "snapshot", p.Status.SnapshotID, "repository", brepo.Status.URL)
	r.Recorder.Event(p, corev1.EventTypeNormal, ReasonSnapshotDeleted, fmt.Sprintf("Deleted snapshot %s from %s", p.Status.SnapshotID, brepo.Status.URL))
	return true, nil
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

// SetupWithManager watches PodVolumeBackups that carry the finalizer and are being deleted.
func (r *SnapshotFinalizerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	deleting := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return !o.GetDeletionTimestamp().IsZero() && controllerutil.ContainsFinalizer(o, FinalizerSnapshot)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.PodVolumeBackup{}, builder.WithPredicates(deleting)).
		Named("snapshotfinalizer").
		Complete(r)
}
