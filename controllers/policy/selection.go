package policy

import (
	"context"
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/internal/identity"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Skip reasons: a volume the selector picked that Holdfast cannot back up.
const (
	SkipHostPath            = "HostPath"
	SkipSecret              = "Secret"
	SkipConfigMap           = "ConfigMap"
	SkipProjected           = "Projected"
	SkipDownwardAPI         = "DownwardAPI"
	SkipServiceAccountToken = "ServiceAccountToken"
	SkipBlockMode           = "BlockMode"
	SkipPodNotRunning       = "PodNotRunning"
	SkipNoNode              = "NoNode"
	SkipClaimNotFound       = "ClaimNotFound"
	SkipImage               = "Image"
	SkipSelectorError       = "SelectorError"
	// SkipNamespaceSelectorError: the namespace expression failed on the volume's
	// namespace, so whether the policy selects it is unknown.
	SkipNamespaceSelectorError = "NamespaceSelectorError"
	SkipInFlight               = "InFlight"
	// SkipSelectorBudgetExceeded: the selection pass spent its CEL cost budget
	// before the volume (or its namespace) was evaluated.
	SkipSelectorBudgetExceeded = "SelectorBudgetExceeded"
	// SkipWindows: a pod for Windows, or on a Windows node; the agent runs on Linux.
	SkipWindows = "Windows"
	// SkipNotMounted: a claim no pod uses, selected by a policy whose
	// claimsWithoutPods is Skip.
	SkipNotMounted = "NotMounted"
	maxExamples    = 5
)

// snapshot is what the controller's caches hold, indexed for one selection pass.
type snapshot struct {
	namespaces []*corev1.Namespace
	pods       map[string][]*corev1.Pod // by namespace
	claims     map[string]*corev1.PersistentVolumeClaim
	// claimsByNamespace are the claims of each namespace, in list order.
	claimsByNamespace map[string][]*corev1.PersistentVolumeClaim
	// volumes are the PersistentVolumes by name; hostPathRoots the host directories
	// under which claims on hostPath ones are backed up (--host-path-roots).
	volumes       map[string]*corev1.PersistentVolume
	hostPathRoots hostpath.Roots
	rsOwner       identity.OwnerOfReplicaSet
	// nodeOS is the kubernetes.io/os label of each node that has one.
	nodeOS map[string]string
	// costBudget is the CEL cost the pass may spend; 0 is celpolicy.PassCostBudget.
	costBudget uint64
	// backedUpPaths are the source paths of the policy's backups of each pod, by pod
	// UID, newest first: the replica slot a pod already backs up into.
	backedUpPaths map[types.UID][]string
}

// labelOS is the well-known label (and node selector) of a node's operating system.
const labelOS = "kubernetes.io/os"

// windows reports whether the pod runs, or is meant to run, on Windows.
func (s *snapshot) windows(pod *corev1.Pod) bool {
	return (pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows) ||
		pod.Spec.NodeSelector[labelOS] == "windows" ||
		(pod.Spec.NodeName != "" && s.nodeOS[pod.Spec.NodeName] == "windows")
}

func claimKey(ns, name string) string { return ns + "/" + name }

// target is one selected volume that can be backed up.
type target struct {
	// pod is the pod the volume is backed up through; for a claim no pod uses
	// (unmounted set) it only carries the namespace: the run backs the claim up
	// through its reader pod (readerPodName).
	pod        *corev1.Pod
	volume     string
	claim      string
	sourcePath string
	unmounted  *corev1.PersistentVolumeClaim
}

// key names the volume in skip lists and failures: <ns>/<pod>/<volume>, or
// <ns>/<claim> for a claim no pod uses.
func (t target) key() string {
	if t.unmounted != nil {
		return t.pod.Namespace + "/" + t.claim
	}
	return t.pod.Namespace + "/" + t.pod.Name + "/" + t.volume
}

// selection is the outcome of a pass: what is backed up and what is skipped, by reason.
type selection struct {
	targets    []target
	namespaces int
	skipped    map[string][]string // reason -> <ns>/<pod>/<volume>
	// firstError is the first evaluation error, for the event that reports it.
	firstError error
	// hostPathClaims are the claims skipped as HostPath because their hostPath
	// PersistentVolume is outside --host-path-roots, as "<ns>/<claim> (PersistentVolume
	// <name>)", for the event that says how to back them up.
	hostPathClaims []string
	// budgetExceeded is set when the pass spent its CEL cost budget: the volumes not
	// evaluated are skipped as SelectorBudgetExceeded. spent is the cost it spent.
	budgetExceeded bool
	spent          uint64
}

// isBudget reports whether err is an evaluation refused because the pass spent its
// cost budget.
func isBudget(err error) bool {
	for _, e := range celpolicy.Errors(err) {
		if e.Type == celpolicy.ErrorBudget {
			return true
		}
	}
	return false
}

func (s *selection) skip(reason string, pod *corev1.Pod, volume string) {
	s.skipKey(reason, pod.Namespace+"/"+pod.Name+"/"+volume)
}

func (s *selection) skipKey(reason, key string) {
	if s.skipped == nil {
		s.skipped = map[string][]string{}
	}
	s.skipped[reason] = append(s.skipped[reason], key)
}

// selectVolumes evaluates the selector over every pod and every claim no pod uses
// of the snapshot. It makes no API call: everything comes from the informer caches.
func selectVolumes(sel *celpolicy.Selector, snap *snapshot, claims v1.ClaimsWithoutPods) *selection {
	return selectVolumesVisit(sel, snap, claims, nil, nil)
}

// selectVolumesVisit is selectVolumes that also calls visit, when not nil, for every
// pod volume it backs up (skip "") or skips (the reason), and visitClaim for every
// claim no pod uses that it picks, before the targets are reduced to one per source.
func selectVolumesVisit(sel *celpolicy.Selector, snap *snapshot, claims v1.ClaimsWithoutPods,
	visit func(pod *corev1.Pod, vol *corev1.Volume, skip string), visitClaim func(pvc *corev1.PersistentVolumeClaim, skip string)) *selection {
	out := &selection{}
	if visit == nil {
		visit = func(*corev1.Pod, *corev1.Volume, string) {}
	}
	if visitClaim == nil {
		visitClaim = func(*corev1.PersistentVolumeClaim, string) {}
	}
	defer func() { out.targets = onePerSource(out.targets) }()
	cache := &celpolicy.Cache{Budget: snap.costBudget}
	defer func() { out.spent = cache.Spent() }()
	for _, ns := range snap.namespaces {
		nsOK, nsErr := sel.MatchNamespace(ns, cache)
		nsReason := SkipNamespaceSelectorError
		if isBudget(nsErr) {
			nsReason, out.budgetExceeded = SkipSelectorBudgetExceeded, true
		} else if nsErr != nil && out.firstError == nil {
			out.firstError = fmt.Errorf("namespace %s: %w", ns.Name, nsErr)
		}
		if nsErr == nil && !nsOK {
			continue
		}
		selectedHere := false
		slots := snap.replicaSlots(snap.pods[ns.Name])
		for _, pod := range snap.pods[ns.Name] {
			if !live(pod) || IsReaderPod(pod) {
				continue // finished or going away, or Holdfast's own: nothing to protect
			}
			for i := range pod.Spec.Volumes {
				vol := &pod.Spec.Volumes[i]
				if restorewait.IsMarkerVolume(pod, vol.Name) {
					continue // Holdfast's own, not the application's
				}
				claimName := identity.ClaimName(pod, vol)
				var pvc *corev1.PersistentVolumeClaim
				if claimName != "" {
					pvc = snap.claims[claimKey(pod.Namespace, claimName)]
				}
				hostPathPV := snap.hostPathOutsideRoots(pvc)
				ok, err := sel.MatchVolume(celpolicy.Volume{Namespace: ns, Pod: pod, Volume: vol, PVC: pvc}, cache)
				if nsErr != nil {
					// The namespace expression failed here: the volumes the policy would
					// back up if it had matched are counted, never silently dropped.
					if (ok || err != nil) && skipReason(pod, vol, claimName, pvc, hostPathPV != "", snap.windows(pod)) == "" {
						out.skip(nsReason, pod, vol.Name)
						visit(pod, vol, nsReason)
					}
					continue
				}
				if isBudget(err) {
					out.budgetExceeded = true
					out.skip(SkipSelectorBudgetExceeded, pod, vol.Name)
					visit(pod, vol, SkipSelectorBudgetExceeded)
					continue
				}
				if err != nil {
					out.skip(SkipSelectorError, pod, vol.Name)
					visit(pod, vol, SkipSelectorError)
					if out.firstError == nil {
						out.firstError = fmt.Errorf("%s/%s/%s: %w", pod.Namespace, pod.Name, vol.Name, err)
					}
					continue
				}
				if !ok {
					continue
				}
				if reason := skipReason(pod, vol, claimName, pvc, hostPathPV != "", snap.windows(pod)); reason != "" {
					out.skip(reason, pod, vol.Name)
					if reason == SkipHostPath && hostPathPV != "" {
						out.hostPathClaims = append(out.hostPathClaims, fmt.Sprintf("%s/%s (PersistentVolume %s)", pod.Namespace, claimName, hostPathPV))
					}
					visit(pod, vol, reason)
					continue
				}
				visit(pod, vol, "")
				selectedHere = true
				out.targets = append(out.targets, target{pod: pod, volume: vol.Name, claim: claimName,
					sourcePath: identity.ReplicaSourcePath(pod, vol, snap.rsOwner, slots[pod.UID])})
			}
		}
		if nsErr == nil && snap.selectUnmounted(sel, ns, cache, claims, out, visitClaim) {
			selectedHere = true
		}
		if selectedHere {
			out.namespaces++
		}
	}
	return out
}

// selectUnmounted evaluates the selector on every bound claim of ns that no pod uses,
// with pod = null and the volume {name: <claim>, persistentVolumeClaim: {claimName:
// <claim>}}, and adds the claims it picks as targets (Backup) or skips them as
// NotMounted (Skip). A claim any live pod (Pending ones too) references is the pod's:
// a reader pod never competes with the application. Reports whether it added a target.
func (s *snapshot) selectUnmounted(sel *celpolicy.Selector, ns *corev1.Namespace, cache *celpolicy.Cache, mode v1.ClaimsWithoutPods,
	out *selection, visit func(pvc *corev1.PersistentVolumeClaim, skip string)) bool {
	used := map[string]bool{}
	for _, pod := range s.pods[ns.Name] {
		if !live(pod) || IsReaderPod(pod) {
			continue
		}
		for i := range pod.Spec.Volumes {
			if claim := identity.ClaimName(pod, &pod.Spec.Volumes[i]); claim != "" {
				used[claim] = true
			}
		}
	}
	added := false
	for _, pvc := range s.claimsByNamespace[ns.Name] {
		if used[pvc.Name] || pvc.DeletionTimestamp != nil || pvc.Status.Phase != corev1.ClaimBound {
			continue
		}
		vol := UnmountedVolume(pvc)
		key := pvc.Namespace + "/" + pvc.Name
		ok, err := sel.MatchVolume(celpolicy.Volume{Namespace: ns, Volume: vol, PVC: pvc}, cache)
		switch {
		case isBudget(err):
			out.budgetExceeded = true
			out.skipKey(SkipSelectorBudgetExceeded, key)
			visit(pvc, SkipSelectorBudgetExceeded)
			continue
		case err != nil:
			// An expression that needs the pod fails on null: it was written for
			// mounted volumes and does not pick the claim.
			continue
		case !ok:
			continue
		}
		reason := ""
		switch {
		case mode == v1.ClaimsWithoutPodsSkip:
			reason = SkipNotMounted
		case pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock:
			reason = SkipBlockMode
		case s.hostPathOutsideRoots(pvc) != "":
			reason = SkipHostPath
		}
		visit(pvc, reason)
		if reason != "" {
			out.skipKey(reason, key)
			continue
		}
		added = true
		out.targets = append(out.targets, target{pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pvc.Namespace}},
			volume: readerVolume, claim: pvc.Name, sourcePath: identity.SourcePath(nil, vol, nil), unmounted: pvc})
	}
	return added
}

// UnmountedVolume is the volume a selector is evaluated on for a claim no pod uses
// (with pod = null): the claim as a pod would mount it, named after it.
func UnmountedVolume(pvc *corev1.PersistentVolumeClaim) *corev1.Volume {
	return &corev1.Volume{Name: pvc.Name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name}}}
}

// live says whether a pod still holds data to protect: not finished, not going away.
func live(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// replicaSlots gives every live pod of one namespace that is a replica of an owner
// (identity.ReplicaOwner) its slot among the owner's live pods: the slot its backups
// already use while it is free, else the lowest free one, oldest pod first (see
// package identity). Pods that are not replicas are absent, which is slot 0.
func (s *snapshot) replicaSlots(pods []*corev1.Pod) map[types.UID]int {
	owners := map[string][]*corev1.Pod{}
	for _, pod := range pods {
		if !live(pod) {
			continue
		}
		if owner, ok := identity.ReplicaOwner(pod, s.rsOwner); ok {
			owners[owner] = append(owners[owner], pod)
		}
	}
	out := map[types.UID]int{}
	for owner, replicas := range owners {
		previous := map[types.UID]int{}
		for _, pod := range replicas {
			for _, path := range s.backedUpPaths[pod.UID] {
				if slot, ok := identity.SlotOf(owner, path); ok {
					previous[pod.UID] = slot
					break
				}
			}
		}
		for uid, slot := range identity.AssignSlots(replicas, previous, nil) {
			out[uid] = slot
		}
	}
	return out
}

// onePerSource keeps one target per source path of a namespace: a claim that several
// selected pods mount (ReadWriteMany, or pods on one node) is one copy of the data and
// is backed up once per run, through its oldest pod (then by name); the targets are
// Running pods on a node already. Targets keep their order otherwise.
func onePerSource(targets []target) []target {
	chosen := map[string]int{} // <namespace><sourcePath> -> index in out
	out := targets[:0]
	for _, t := range targets {
		key := t.pod.Namespace + t.sourcePath
		i, seen := chosen[key]
		if !seen {
			chosen[key] = len(out)
			out = append(out, t)
			continue
		}
		if Older(t.pod, out[i].pod) {
			out[i] = t
		}
	}
	return out
}

// Older orders pods by creation time, then name: which of a claim's pods a run backs it
// up through, and which one coverage names.
func Older(a, b *corev1.Pod) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// hostPathOutsideRoots names the PersistentVolume pvc is bound to when it is a
// hostPath one outside --host-path-roots, which the agent cannot read: the kubelet
// does not mount it under the pod's directory. A claim not bound yet, or whose
// PersistentVolume the cache does not hold yet (its watch brings the policy back),
// gives "".
func (s *snapshot) hostPathOutsideRoots(pvc *corev1.PersistentVolumeClaim) string {
	if pvc == nil || pvc.Spec.VolumeName == "" {
		return ""
	}
	pv := s.volumes[pvc.Spec.VolumeName]
	if _, ok, err := s.hostPathRoots.Of(pv); ok && err != nil {
		return pv.Name
	}
	return ""
}

// skipReason says why a selected volume cannot be backed up, or "". hostPathPV is
// set for a claim bound to a hostPath PersistentVolume outside --host-path-roots.
func skipReason(pod *corev1.Pod, vol *corev1.Volume, claimName string, pvc *corev1.PersistentVolumeClaim, hostPathPV, windows bool) string {
	switch {
	case vol.HostPath != nil:
		return SkipHostPath
	case vol.Secret != nil:
		return SkipSecret
	case vol.ConfigMap != nil:
		return SkipConfigMap
	case vol.DownwardAPI != nil:
		return SkipDownwardAPI
	case vol.Image != nil:
		return SkipImage
	case vol.Projected != nil:
		for _, src := range vol.Projected.Sources {
			if src.ServiceAccountToken != nil {
				return SkipServiceAccountToken
			}
		}
		return SkipProjected
	}
	if claimName != "" {
		if pvc == nil {
			return SkipClaimNotFound
		}
		if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
			return SkipBlockMode
		}
		if hostPathPV {
			return SkipHostPath
		}
	}
	if windows {
		// No agent runs there: a backup would wait for ever and block the volume as
		// InFlight in every later run (review M4).
		return SkipWindows
	}
	if pod.Spec.NodeName == "" {
		return SkipNoNode
	}
	if pod.Status.Phase != corev1.PodRunning {
		return SkipPodNotRunning
	}
	return ""
}

// skippedStatus turns the skipped volumes into status entries, sorted by reason, with
// the first few examples in name order so that the status does not churn.
func skippedStatus(skipped map[string][]string) (int32, []v1.SkippedVolumes) {
	var total int32
	out := make([]v1.SkippedVolumes, 0, len(skipped))
	for reason, vols := range skipped {
		sort.Strings(vols)
		n := min(len(vols), maxExamples)
		out = append(out, v1.SkippedVolumes{Reason: reason, Count: int32(len(vols)), Examples: append([]string(nil), vols[:n]...)})
		total += int32(len(vols))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	if len(out) == 0 {
		out = nil
	}
	return total, out
}

// ownerFromCache answers identity.OwnerOfReplicaSet from a list of ReplicaSet metadata.
func ownerFromCache(owners map[string]*metav1.OwnerReference) identity.OwnerOfReplicaSet {
	return func(ns, name string) *metav1.OwnerReference { return owners[ns+"/"+name] }
}

// reconcileSelection evaluates the selector over the cached namespaces, pods and
// claims and records the counts and skip reasons. Sets no condition.
func (r *VolumeBackupPolicyReconciler) reconcileSelection(ctx context.Context, s *scope) error {
	snap, err := r.snapshot(ctx)
	if err != nil {
		return err
	}
	hadErrors := hasSkip(s.policy.Status.Skipped, SkipSelectorError) || hasSkip(s.policy.Status.Skipped, SkipNamespaceSelectorError)
	snap.costBudget = r.CostBudget
	pvbs, err := r.policyBackups(ctx, s.policy)
	if err != nil {
		return err
	}
	snap.backedUpPaths = backedUpPaths(pvbs)
	s.snap = snap
	s.backups = make(map[string]*v1.PodVolumeBackup, len(pvbs))
	for i := range pvbs {
		s.backups[pvbs[i].Namespace+"/"+pvbs[i].Name] = &pvbs[i]
	}
	hadBudget := hasSkip(s.policy.Status.Skipped, SkipSelectorBudgetExceeded)
	s.sel = selectVolumes(s.selector, snap, s.policy.Spec.ClaimsWithoutPods)
	if s.sel.budgetExceeded && !hadBudget {
		r.event(ctx, s.policy, corev1.EventTypeWarning, ReasonSelectorBudgetExceeded, "%s", budgetMessage(s.sel))
	}
	if s.sel.firstError != nil && !hadErrors {
		r.event(ctx, s.policy, corev1.EventTypeWarning, "SelectorEvaluationFailed",
			"the selector failed on %d volumes (skipped as %s) and %d more in namespaces where the namespace expression failed (skipped as %s), first %v",
			len(s.sel.skipped[SkipSelectorError]), SkipSelectorError,
			len(s.sel.skipped[SkipNamespaceSelectorError]), SkipNamespaceSelectorError, s.sel.firstError)
	}
	// Once when they appear, not on every pass: the HostPath count (inline hostPath
	// volumes too) in status is the previous pass's.
	if len(s.sel.hostPathClaims) > 0 && len(s.sel.skipped[SkipHostPath]) > skipCount(s.policy.Status.Skipped, SkipHostPath) {
		r.event(ctx, s.policy, corev1.EventTypeWarning, ReasonHostPathSkipped, "%s", hostPathMessage(s.sel.hostPathClaims))
	}
	s.unfinished = unfinishedBackups(pvbs)
	current := ""
	if s.policy.Status.LastRun != nil {
		current = s.policy.Status.LastRun.Name
	}
	applyInFlight(s, current)
	return nil
}

// ReasonHostPathSkipped (Warning): claims the policy selects are bound to hostPath
// PersistentVolumes outside --host-path-roots and are skipped as HostPath.
const ReasonHostPathSkipped = "HostPathSkipped"

// hostPathMessage names the claims skipped because of their hostPath PersistentVolume
// and says how to back them up.
func hostPathMessage(claims []string) string {
	sorted := slices.Sorted(slices.Values(claims))
	return fmt.Sprintf("%d claims are bound to hostPath PersistentVolumes (a local-path provisioner's) outside --host-path-roots and are skipped as %s, first %s: "+
		"to back them up, give the manager and the agents --host-path-roots naming the directory the provisioner creates them in (the kustomize component local-path; docs/policies.md)",
		len(claims), SkipHostPath, sorted[0])
}

func skipCount(skipped []v1.SkippedVolumes, reason string) int {
	for _, s := range skipped {
		if s.Reason == reason {
			return int(s.Count)
		}
	}
	return 0
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
			s.sel.skipKey(SkipInFlight, t.key())
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

// policyBackups lists the PodVolumeBackups of policy p, as the cache holds them:
// callers must not change them.
func (r *VolumeBackupPolicyReconciler) policyBackups(ctx context.Context, p *v1.VolumeBackupPolicy) ([]v1.PodVolumeBackup, error) {
	var pvbs v1.PodVolumeBackupList
	// Read only (cancelForApp patches a copy): a copy of each of the policy's
	// backups on every pass would be most of what the pass allocates.
	if err := r.List(ctx, &pvbs, client.MatchingLabels{v1.LabelPolicy: policyLabel(p.Name)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing PodVolumeBackups: %w", err)
	}
	return pvbs.Items, nil
}

// unfinishedBackups maps <namespace><sourcePath> to the run of each unfinished backup
// in pvbs.
func unfinishedBackups(pvbs []v1.PodVolumeBackup) map[string]string {
	out := map[string]string{}
	for _, b := range pvbs {
		if !finished(b.Status.Phase) {
			out[b.Namespace+b.Spec.SourcePath] = b.Labels[v1.LabelRun]
		}
	}
	return out
}

// backedUpPaths lists the source paths of the backups in pvbs by pod UID, newest
// backup first.
func backedUpPaths(pvbs []v1.PodVolumeBackup) map[types.UID][]string {
	sorted := make([]*v1.PodVolumeBackup, 0, len(pvbs))
	for i := range pvbs {
		sorted = append(sorted, &pvbs[i])
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		}
		return a.Name > b.Name
	})
	out := map[types.UID][]string{}
	for _, b := range sorted {
		uid := types.UID(b.Spec.Pod.UID)
		out[uid] = append(out[uid], b.Spec.SourcePath)
	}
	return out
}

// snapshot reads namespaces, pods, claims and ReplicaSet owners from the informer
// caches without copying them (nothing here modifies them): one pass over 10,000 pods
// costs no API call and no deep copy.
func (r *VolumeBackupPolicyReconciler) snapshot(ctx context.Context) (*snapshot, error) {
	if r.Cache != nil {
		return readSnapshot(ctx, r.Cache, r.HostPathRoots)
	}
	return readSnapshot(ctx, r.Client, r.HostPathRoots)
}

func readSnapshot(ctx context.Context, r client.Reader, roots hostpath.Roots) (*snapshot, error) {
	var nss corev1.NamespaceList
	if err := r.List(ctx, &nss, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	pods, err := listPods(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &pvcs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing claims: %w", err)
	}
	var pvs corev1.PersistentVolumeList
	if err := r.List(ctx, &pvs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing persistent volumes: %w", err)
	}
	var rss metav1.PartialObjectMetadataList
	rss.SetGroupVersionKind(replicaSetListGVK)
	if err := r.List(ctx, &rss, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing replica sets: %w", err)
	}
	var nodes metav1.PartialObjectMetadataList
	nodes.SetGroupVersionKind(nodeListGVK)
	if err := r.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	snap := newSnapshot(pointers(nss.Items), pods, pointers(pvcs.Items), pointers(rss.Items), pointers(nodes.Items))
	snap.setVolumes(pointers(pvs.Items), roots)
	return snap, nil
}

// listPods lists the pods r holds. From an informer cache (the manager's) it takes
// the pointers of the informer's store: a List, even without deep copies, copies each
// Pod struct (1,240 bytes) into a new slice, 12 MiB a pass at 10,000 pods, live while
// the pass runs and so counted twice by the garbage collector's target.
func listPods(ctx context.Context, r client.Reader) ([]*corev1.Pod, error) {
	if informers, ok := r.(cache.Informers); ok {
		inf, err := informers.GetInformer(ctx, &corev1.Pod{})
		if err != nil {
			return nil, err
		}
		if st, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
			objs := st.GetStore().List()
			pods := make([]*corev1.Pod, 0, len(objs))
			for _, o := range objs {
				if p, ok := o.(*corev1.Pod); ok {
					pods = append(pods, p)
				}
			}
			return pods, nil
		}
	}
	var list corev1.PodList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return pointers(list.Items), nil
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// setVolumes indexes the PersistentVolumes and sets the --host-path-roots.
func (s *snapshot) setVolumes(pvs []*corev1.PersistentVolume, roots hostpath.Roots) {
	s.volumes = make(map[string]*corev1.PersistentVolume, len(pvs))
	for _, pv := range pvs {
		s.volumes[pv.Name] = pv
	}
	s.hostPathRoots = roots
}

// newSnapshot indexes the objects of one selection pass; it keeps the pointers.
func newSnapshot(nss []*corev1.Namespace, pods []*corev1.Pod, pvcs []*corev1.PersistentVolumeClaim, rss, nodes []*metav1.PartialObjectMetadata) *snapshot {
	snap := &snapshot{namespaces: nss, pods: map[string][]*corev1.Pod{}, claims: make(map[string]*corev1.PersistentVolumeClaim, len(pvcs)),
		claimsByNamespace: map[string][]*corev1.PersistentVolumeClaim{}}
	for _, pod := range pods {
		snap.pods[pod.Namespace] = append(snap.pods[pod.Namespace], pod)
	}
	for _, pvc := range pvcs {
		snap.claims[claimKey(pvc.Namespace, pvc.Name)] = pvc
		snap.claimsByNamespace[pvc.Namespace] = append(snap.claimsByNamespace[pvc.Namespace], pvc)
	}
	snap.nodeOS = make(map[string]string, len(nodes))
	for _, node := range nodes {
		if os := node.Labels[labelOS]; os != "" {
			snap.nodeOS[node.Name] = os
		}
	}
	owners := map[string]*metav1.OwnerReference{}
	for _, rs := range rss {
		if o := metav1.GetControllerOf(rs); o != nil {
			owners[rs.Namespace+"/"+rs.Name] = o
		}
	}
	snap.rsOwner = ownerFromCache(owners)
	return snap
}
