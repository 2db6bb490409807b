package coverage

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/identity"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Reasons a volume is skipped that only coverage gives (a run gives the others).
const (
	// SkipNotMounted: a policy with claimsWithoutPods Skip selects a claim that no
	// live pod mounts; it is backed up again when a pod mounts it.
	SkipNotMounted = policyctrl.SkipNotMounted
	// SkipSuspended: the only policies that would back the volume up are suspended.
	SkipSuspended = "Suspended"
)

// Policy is one VolumeBackupPolicy as the computation sees it.
type Policy struct {
	Name string
	// Selector is the compiled selector; nil when it does not compile (the policy
	// selects nothing, and Problem says why).
	Selector *celpolicy.Selector
	// Exclusion is the compiled spec.coverage.exclude, nil when there is none.
	Exclusion *celpolicy.Expression
	// Suspended policies select, but what they select is Skipped as Suspended.
	Suspended bool
	// ClaimsWithoutPods is the policy's spec.claimsWithoutPods ("" is Backup).
	ClaimsWithoutPods v1.ClaimsWithoutPods
	// Problem is why the selector or the exclusion does not compile, or "".
	Problem string
}

// Input is everything one computation reads.
type Input struct {
	Cluster  *policyctrl.Cluster
	Policies []Policy
	// CostBudget is the CEL cost budget of each pass (per policy, and one for the
	// exclusions); 0 is celpolicy.PassCostBudget, as for a run.
	CostBudget uint64
	// OperatorNamespace is where Holdfast runs: its own pods there (the manager and
	// the agents, labelled app.kubernetes.io/name=holdfast) are not counted, their
	// volumes being the kubelet's root and scratch space.
	OperatorNamespace string
}

// labelName is the app.kubernetes.io/name label of Holdfast's own pods.
const labelName = "app.kubernetes.io/name"

// own says whether pod is one of Holdfast's own (manager, agent).
func (in *Input) own(pod *corev1.Pod) bool {
	return in.OperatorNamespace != "" && pod.Namespace == in.OperatorNamespace && pod.Labels[labelName] == "holdfast"
}

// Volume is one source of data and its coverage: a claim (however many pods mount
// it), or a pod volume that is not a claim, counted once per source identity (the
// replicas of a Deployment share one).
type Volume struct {
	Namespace string
	// Source is identity.SourcePath of the volume (/pvc/data, /deployment/web/cache):
	// the source path of a run's backups, the owner's for replicas.
	Source string
	// Claim is the claim name, "" for a volume that is not a claim.
	Claim string
	// Name is the pod volume's name (the claim's for a claim no pod mounts).
	Name string
	// Type is the volume's kind (persistentVolumeClaim, emptyDir, hostPath, ...).
	Type string
	// Pod and Node: the oldest live pod with the volume in the state below, "" for a
	// claim no pod mounts.
	Pod, Node string
	// State is v1.CoverageProtected, Skipped, Excluded or Unprotected.
	State string
	// Policy protects, skips or excludes the volume (the first in name order).
	Policy string
	// Reason is why a Skipped volume is skipped.
	Reason string

	pod *corev1.Pod
}

// Result is one computation's outcome.
type Result struct {
	// Volumes in namespace, then source order.
	Volumes []Volume
	// ProtectedOnNode counts, per node, the volumes a run would back up there: each
	// protected replica's pod volumes on its node, a claim once on the node of the
	// pod it is backed up through.
	ProtectedOnNode map[string]int
	// Problems are policies whose expressions do not compile or fail, in name order.
	Problems []string
}

// rank orders states from the best: a source has the best state of its pod volumes.
var rank = map[string]int{v1.CoverageProtected: 0, v1.CoverageExcluded: 1, v1.CoverageSkipped: 2, v1.CoverageUnprotected: 3}

// holdsData says whether a pod volume holds data of its own. Secrets, configMaps,
// projected and downwardAPI volumes come from the API and image volumes from an
// image: they are not counted. Everything else is (claims, emptyDir, hostPath, nfs,
// inline CSI, ...).
func holdsData(vol *corev1.Volume) bool {
	s := vol.VolumeSource
	return s.Secret == nil && s.ConfigMap == nil && s.Projected == nil && s.DownwardAPI == nil && s.Image == nil
}

// outcome is what the policies say of one pod volume.
type outcome struct {
	protectedBy        string
	skippedBy, skipWhy string
}

// Compute classifies every pod volume that holds data and every bound claim that no
// live pod mounts. A volume is Protected when a policy would back it up, else
// Excluded when a policy's exclusion matches it, else Skipped when a policy selects it
// but would skip it, else Unprotected.
func Compute(in Input) *Result {
	policies := append([]Policy(nil), in.Policies...)
	sort.Slice(policies, func(i, j int) bool { return policies[i].Name < policies[j].Name })
	res := &Result{ProtectedOnNode: map[string]int{}}
	for _, p := range policies {
		if p.Problem != "" {
			res.Problems = append(res.Problems, fmt.Sprintf("policy %s: %s", p.Name, p.Problem))
		}
	}

	// What each policy's run would do with each pod volume it selects.
	// Claims no live pod uses are keyed <ns>/<claim>, pod volumes <ns>/<pod>/<volume>.
	outcomes := map[string]*outcome{}
	for _, p := range policies {
		if p.Selector == nil {
			continue
		}
		record := func(key, skip string) {
			o := outcomes[key]
			if o == nil {
				o = &outcome{}
				outcomes[key] = o
			}
			if skip == "" && p.Suspended {
				skip = SkipSuspended
			}
			switch {
			case skip == "" && o.protectedBy == "":
				o.protectedBy = p.Name
			case skip != "" && o.skippedBy == "":
				o.skippedBy, o.skipWhy = p.Name, skip
			}
		}
		policyctrl.SelectVolumes(p.Selector, in.Cluster, in.CostBudget, p.ClaimsWithoutPods,
			func(pod *corev1.Pod, vol *corev1.Volume, skip string) { record(podVolumeKey(pod, vol.Name), skip) },
			func(pvc *corev1.PersistentVolumeClaim, skip string) { record(pvc.Namespace+"/"+pvc.Name, skip) })
	}

	ex := &exclusions{policies: policies, cache: &celpolicy.Cache{Budget: in.CostBudget}}
	rsOwner := in.Cluster.ReplicaSetOwner()
	sources := map[string]*Volume{}
	mounted, ownClaims := map[string]bool{}, map[string]bool{}
	namespaces := in.Cluster.Namespaces()
	for _, ns := range namespaces {
		for _, pod := range in.Cluster.Pods(ns.Name) {
			if !policyctrl.Live(pod) || policyctrl.IsReaderPod(pod) {
				continue // finished, or a reader pod: its claim counts as unmounted
			}
			if in.own(pod) {
				// Nor are the claims they mount (a filesystem storage location's).
				for i := range pod.Spec.Volumes {
					if claim := identity.ClaimName(pod, &pod.Spec.Volumes[i]); claim != "" {
						ownClaims[ns.Name+"/"+claim] = true
					}
				}
				continue
			}
			for i := range pod.Spec.Volumes {
				vol := &pod.Spec.Volumes[i]
				if !holdsData(vol) || restorewait.IsMarkerVolume(pod, vol.Name) {
					continue
				}
				claim := identity.ClaimName(pod, vol)
				if claim != "" {
					mounted[ns.Name+"/"+claim] = true
				}
				v := Volume{Namespace: ns.Name, Source: identity.SourcePath(pod, vol, rsOwner), Claim: claim, Name: vol.Name,
					Type: volumeType(vol), Pod: pod.Name, Node: pod.Spec.NodeName, pod: pod}
				var pvc *corev1.PersistentVolumeClaim
				if claim != "" {
					pvc = in.Cluster.Claim(ns.Name, claim)
				}
				o := outcomes[podVolumeKey(pod, vol.Name)]
				switch {
				case o != nil && o.protectedBy != "":
					v.State, v.Policy = v1.CoverageProtected, o.protectedBy
					if claim == "" && pod.Spec.NodeName != "" {
						// Each replica's copy is backed up on its node; a claim is
						// counted once below, on the node of the pod that backs it up.
						res.ProtectedOnNode[pod.Spec.NodeName]++
					}
				default:
					if p := ex.match(celpolicy.Volume{Namespace: ns, Pod: pod, Volume: vol, PVC: pvc}); p != "" {
						v.State, v.Policy = v1.CoverageExcluded, p
					} else if o != nil {
						v.State, v.Policy, v.Reason = v1.CoverageSkipped, o.skippedBy, o.skipWhy
					} else {
						v.State = v1.CoverageUnprotected
					}
				}
				merge(sources, v)
			}
		}
	}
	for _, v := range sources {
		if v.Claim != "" && v.State == v1.CoverageProtected && v.Node != "" {
			res.ProtectedOnNode[v.Node]++
		}
	}

	// Claims no live pod mounts: what the policies' runs do with them (the selection
	// above visited them), a reader pod backing them up, or skipping them NotMounted.
	nsByName := make(map[string]*corev1.Namespace, len(namespaces))
	for _, ns := range namespaces {
		nsByName[ns.Name] = ns
	}
	for _, pvc := range in.Cluster.Claims() {
		ns := nsByName[pvc.Namespace]
		if ns == nil || mounted[pvc.Namespace+"/"+pvc.Name] || ownClaims[pvc.Namespace+"/"+pvc.Name] || pvc.DeletionTimestamp != nil || pvc.Status.Phase != corev1.ClaimBound {
			continue
		}
		vol := policyctrl.UnmountedVolume(pvc)
		v := Volume{Namespace: pvc.Namespace, Source: identity.SourcePath(nil, vol, nil), Claim: pvc.Name, Name: pvc.Name,
			Type: "persistentVolumeClaim", State: v1.CoverageUnprotected}
		o := outcomes[pvc.Namespace+"/"+pvc.Name]
		switch {
		case o != nil && o.protectedBy != "":
			v.State, v.Policy = v1.CoverageProtected, o.protectedBy
		default:
			if p := ex.match(celpolicy.Volume{Namespace: ns, Volume: vol, PVC: pvc}); p != "" {
				v.State, v.Policy = v1.CoverageExcluded, p
			} else if o != nil {
				v.State, v.Policy, v.Reason = v1.CoverageSkipped, o.skippedBy, o.skipWhy
			}
		}
		sources[v.Namespace+v.Source] = &v
	}

	res.Volumes = make([]Volume, 0, len(sources))
	for _, v := range sources {
		res.Volumes = append(res.Volumes, *v)
	}
	sort.Slice(res.Volumes, func(i, j int) bool {
		a, b := &res.Volumes[i], &res.Volumes[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Source < b.Source
	})
	if ex.failed > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("coverage exclusions failed on %d volumes (counted as not excluded), first %v", ex.failed, ex.firstErr))
	}
	return res
}

// merge records v under its source: the best state wins, and among equals the oldest
// pod (the one a run backs a shared claim up through).
func merge(sources map[string]*Volume, v Volume) {
	key := v.Namespace + v.Source
	cur, ok := sources[key]
	if !ok {
		sources[key] = &v
		return
	}
	if rank[v.State] < rank[cur.State] || (rank[v.State] == rank[cur.State] && policyctrl.Older(v.pod, cur.pod)) {
		*cur = v
	}
}

func podVolumeKey(pod *corev1.Pod, volume string) string {
	return pod.Namespace + "/" + pod.Name + "/" + volume
}

// exclusions evaluates the policies' coverage exclusions in name order, in one pass
// with one cost budget.
type exclusions struct {
	policies []Policy
	cache    *celpolicy.Cache
	failed   int
	firstErr error
}

// match returns the first policy whose exclusion matches the volume, or "". A failed
// evaluation does not exclude: a volume is never hidden by an error.
func (e *exclusions) match(in celpolicy.Volume) string {
	for _, p := range e.policies {
		if p.Exclusion == nil {
			continue
		}
		ok, err := p.Exclusion.Match(in, e.cache)
		if err != nil {
			if e.failed == 0 {
				e.firstErr = fmt.Errorf("policy %s: %w", p.Name, err)
			}
			e.failed++
			continue
		}
		if ok {
			return p.Name
		}
	}
	return ""
}

// volumeType names the kind of a pod volume by its source's JSON name.
func volumeType(vol *corev1.Volume) string {
	s := &vol.VolumeSource
	switch {
	case s.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case s.Ephemeral != nil:
		return "ephemeral"
	case s.EmptyDir != nil:
		return "emptyDir"
	case s.HostPath != nil:
		return "hostPath"
	case s.NFS != nil:
		return "nfs"
	case s.CSI != nil:
		return "csi"
	case s.ISCSI != nil:
		return "iscsi"
	case s.FC != nil:
		return "fc"
	case s.GitRepo != nil:
		return "gitRepo"
	}
	return "other"
}
