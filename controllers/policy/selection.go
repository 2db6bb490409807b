package policy

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
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
	maxExamples = 5
)

// snapshot is what the controller's caches hold, indexed for one selection pass.
type snapshot struct {
	namespaces []*corev1.Namespace
	pods       map[string][]*corev1.Pod // by namespace
	claims     map[string]*corev1.PersistentVolumeClaim
	rsOwner    identity.OwnerOfReplicaSet
	// nodeOS is the kubernetes.io/os label of each node that has one.
	nodeOS map[string]string
	// costBudget is the CEL cost the pass may spend; 0 is celpolicy.PassCostBudget.
	costBudget uint64
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
	pod        *corev1.Pod
	volume     string
	claim      string
	sourcePath string
}

// selection is the outcome of a pass: what is backed up and what is skipped, by reason.
type selection struct {
	targets    []target
	namespaces int
	skipped    map[string][]string // reason -> <ns>/<pod>/<volume>
	// firstError is the first evaluation error, for the event that reports it.
	firstError error
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
	if s.skipped == nil {
		s.skipped = map[string][]string{}
	}
	s.skipped[reason] = append(s.skipped[reason], pod.Namespace+"/"+pod.Name+"/"+volume)
}

// selectVolumes evaluates the selector over every pod of the snapshot. It makes no API
// call: everything comes from the informer caches.
func selectVolumes(sel *celpolicy.Selector, snap *snapshot) *selection {
	out := &selection{}
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
		for _, pod := range snap.pods[ns.Name] {
			if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue // finished or going away: nothing left to protect
			}
			for i := range pod.Spec.Volumes {
				vol := &pod.Spec.Volumes[i]
				claimName := identity.ClaimName(pod, vol)
				var pvc *corev1.PersistentVolumeClaim
				if claimName != "" {
					pvc = snap.claims[claimKey(pod.Namespace, claimName)]
				}
				ok, err := sel.MatchVolume(celpolicy.Volume{Namespace: ns, Pod: pod, Volume: vol, PVC: pvc}, cache)
				if nsErr != nil {
					// The namespace expression failed here: the volumes the policy would
					// back up if it had matched are counted, never silently dropped.
					if (ok || err != nil) && skipReason(pod, vol, claimName, pvc, snap.windows(pod)) == "" {
						out.skip(nsReason, pod, vol.Name)
					}
					continue
				}
				if isBudget(err) {
					out.budgetExceeded = true
					out.skip(SkipSelectorBudgetExceeded, pod, vol.Name)
					continue
				}
				if err != nil {
					out.skip(SkipSelectorError, pod, vol.Name)
					if out.firstError == nil {
						out.firstError = fmt.Errorf("%s/%s/%s: %w", pod.Namespace, pod.Name, vol.Name, err)
					}
					continue
				}
				if !ok {
					continue
				}
				if reason := skipReason(pod, vol, claimName, pvc, snap.windows(pod)); reason != "" {
					out.skip(reason, pod, vol.Name)
					continue
				}
				selectedHere = true
				out.targets = append(out.targets, target{pod: pod, volume: vol.Name, claim: claimName,
					sourcePath: identity.SourcePath(pod, vol, snap.rsOwner)})
			}
		}
		if selectedHere {
			out.namespaces++
		}
	}
	return out
}

// skipReason says why a selected volume cannot be backed up, or "".
func skipReason(pod *corev1.Pod, vol *corev1.Volume, claimName string, pvc *corev1.PersistentVolumeClaim, windows bool) string {
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
