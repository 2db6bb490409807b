package coverage

import (
	"fmt"
	"sort"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
)

// Condition reasons of the VolumeCoverage.
const (
	// ReasonComputed: Ready, the status is the last computation's.
	ReasonComputed = "Computed"
	// ReasonPolicyProblem: Stalled, a policy's selector or exclusion does not compile
	// or fails; what it would select or exclude is not.
	ReasonPolicyProblem = "PolicyProblem"
	// ReasonAllCovered: Covered, no volume is unprotected.
	ReasonAllCovered = "AllCovered"
	// ReasonUnprotected: not Covered, some volumes are unprotected.
	ReasonUnprotected = "Unprotected"
	maxExamples       = 5
	maxProblems       = 3
)

// setStatus writes a computation into the status: whole counts, bounded lists, the
// Ready (or Stalled) and Covered conditions. Pure, so that a table test covers it.
func setStatus(st *v1.VolumeCoverageStatus, gen int64, res *Result, now metav1.Time) {
	st.LastComputedTime = &now
	st.Protected, st.Skipped, st.Excluded, st.Unprotected = 0, 0, 0, 0
	perNS := map[string]*v1.NamespaceCoverage{}
	skipped := map[string]*v1.CoverageReason{}
	excluded := map[string]*v1.CoverageReason{}
	var claims []v1.UnprotectedClaim
	var vols []v1.UnprotectedVolume
	var unprotectedClaims, unprotectedVols int
	for i := range res.Volumes {
		v := &res.Volumes[i]
		ns := perNS[v.Namespace]
		if ns == nil {
			ns = &v1.NamespaceCoverage{Namespace: v.Namespace}
			perNS[v.Namespace] = ns
		}
		switch v.State {
		case v1.CoverageProtected:
			st.Protected++
			ns.Protected++
		case v1.CoverageSkipped:
			st.Skipped++
			ns.Skipped++
			count(skipped, v.Reason, v)
		case v1.CoverageExcluded:
			st.Excluded++
			ns.Excluded++
			count(excluded, v.Policy, v)
		case v1.CoverageUnprotected:
			st.Unprotected++
			ns.Unprotected++
			// res.Volumes is in namespace and source order: the first ones listed
			// stay the same from one computation to the next.
			if v.Claim != "" {
				unprotectedClaims++
				if len(claims) < v1.MaxCoverageEntries {
					claims = append(claims, v1.UnprotectedClaim{Namespace: v.Namespace, Name: v.Claim, Pod: v.Pod})
				}
			} else {
				unprotectedVols++
				if len(vols) < v1.MaxCoverageEntries {
					vols = append(vols, v1.UnprotectedVolume{Namespace: v.Namespace, Source: v.Source, Volume: v.Name, Pod: v.Pod, Type: v.Type})
				}
			}
		}
	}
	st.UnprotectedClaims, st.UnprotectedClaimsOmitted = claims, int32(unprotectedClaims-len(claims))
	st.UnprotectedVolumes, st.UnprotectedVolumesOmitted = vols, int32(unprotectedVols-len(vols))
	st.SkippedReasons = reasons(skipped)
	st.Exclusions = reasons(excluded)

	nss := make([]v1.NamespaceCoverage, 0, len(perNS))
	for _, ns := range perNS {
		nss = append(nss, *ns)
	}
	// Namespaces with unprotected volumes first: they are what a person looks for.
	sort.Slice(nss, func(i, j int) bool {
		if (nss[i].Unprotected > 0) != (nss[j].Unprotected > 0) {
			return nss[i].Unprotected > 0
		}
		return nss[i].Namespace < nss[j].Namespace
	})
	st.NamespacesOmitted = 0
	if len(nss) > v1.MaxCoverageNamespaces {
		st.NamespacesOmitted = int32(len(nss) - v1.MaxCoverageNamespaces)
		nss = nss[:v1.MaxCoverageNamespaces]
	}
	if len(nss) == 0 {
		nss = nil
	}
	st.Namespaces = nss

	total := len(res.Volumes)
	if len(res.Problems) > 0 {
		probs := res.Problems
		more := ""
		if len(probs) > maxProblems {
			more = fmt.Sprintf("; and %d more", len(probs)-maxProblems)
			probs = probs[:maxProblems]
		}
		conditions.MarkStalled(&st.Conditions, gen, ReasonPolicyProblem,
			fmt.Sprintf("computed the coverage of %d volumes, but %s%s: fix the policy; until then what it would select or exclude is not", total, strings.Join(probs, "; "), more))
	} else {
		conditions.MarkReady(&st.Conditions, gen, ReasonComputed,
			fmt.Sprintf("computed the coverage of %d volumes in %d namespaces", total, len(perNS)))
	}
	covered := metav1.Condition{Type: v1.ConditionCovered, ObservedGeneration: gen, Status: metav1.ConditionTrue, Reason: ReasonAllCovered,
		Message: fmt.Sprintf("no volume is unprotected: %d protected, %d skipped, %d excluded", st.Protected, st.Skipped, st.Excluded)}
	if st.Unprotected > 0 {
		covered.Status, covered.Reason = metav1.ConditionFalse, ReasonUnprotected
		covered.Message = unprotectedMessage(st, unprotectedClaims, unprotectedVols)
	}
	apimeta.SetStatusCondition(&st.Conditions, covered)
	st.ObservedGeneration = gen
}

// unprotectedMessage is the one sentence `kubectl describe` shows about what no
// policy protects.
func unprotectedMessage(st *v1.VolumeCoverageStatus, claims, vols int) string {
	nsWith := 0
	for _, ns := range st.Namespaces {
		if ns.Unprotected > 0 {
			nsWith++
		}
	}
	var first []string
	for _, c := range st.UnprotectedClaims {
		if len(first) == maxExamples {
			break
		}
		first = append(first, "claim "+c.Namespace+"/"+c.Name)
	}
	for _, v := range st.UnprotectedVolumes {
		if len(first) == maxExamples {
			break
		}
		first = append(first, v.Type+" "+v.Namespace+v.Source)
	}
	where := fmt.Sprintf("in %d namespaces", nsWith)
	if st.NamespacesOmitted > 0 {
		where = fmt.Sprintf("in %d namespaces or more", nsWith)
	}
	return fmt.Sprintf("%d claims and %d other pod volumes %s are not protected by any policy nor excluded (first: %s): select them in a VolumeBackupPolicy, or exclude them with spec.coverage.exclude",
		claims, vols, where, strings.Join(first, ", "))
}

func count(m map[string]*v1.CoverageReason, reason string, v *Volume) {
	r := m[reason]
	if r == nil {
		r = &v1.CoverageReason{Reason: reason}
		m[reason] = r
	}
	r.Count++
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, v.Namespace+v.Source)
	}
}

// reasons lists the counts by reason in name order, at most MaxCoverageReasons.
func reasons(m map[string]*v1.CoverageReason) []v1.CoverageReason {
	if len(m) == 0 {
		return nil
	}
	out := make([]v1.CoverageReason, 0, len(m))
	for _, r := range m {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	if len(out) > v1.MaxCoverageReasons {
		out = out[:v1.MaxCoverageReasons]
	}
	return out
}
