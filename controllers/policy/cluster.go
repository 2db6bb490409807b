package policy

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/internal/identity"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Cluster is what a selection pass reads: namespaces, pods, claims, ReplicaSet owners
// and node operating systems. It is exported for the coverage computation, which must
// select exactly as a run does (SelectVolumes). Its objects are shared with the
// informer caches: do not modify them.
type Cluster struct{ snap *snapshot }

// ReadCluster reads the cluster from c (the manager's cache) without copying objects;
// roots are the manager's --host-path-roots.
func ReadCluster(ctx context.Context, c client.Reader, roots hostpath.Roots) (*Cluster, error) {
	snap, err := readSnapshot(ctx, c, roots)
	if err != nil {
		return nil, err
	}
	return &Cluster{snap: snap}, nil
}

// NewCluster builds a Cluster from objects (tests and benchmarks).
func NewCluster(namespaces []*corev1.Namespace, pods []*corev1.Pod, claims []*corev1.PersistentVolumeClaim, replicaSets, nodes []*metav1.PartialObjectMetadata) *Cluster {
	return &Cluster{snap: newSnapshot(namespaces, pods, claims, replicaSets, nodes)}
}

// WithPersistentVolumes adds the PersistentVolumes claims are bound to and the
// --host-path-roots a run selects with (tests).
func (c *Cluster) WithPersistentVolumes(pvs []*corev1.PersistentVolume, roots hostpath.Roots) *Cluster {
	c.snap.setVolumes(pvs, roots)
	return c
}

// Namespaces are the namespaces of the cluster, in list order.
func (c *Cluster) Namespaces() []*corev1.Namespace { return c.snap.namespaces }

// Pods are the pods of one namespace, finished and terminating ones included (see Live).
func (c *Cluster) Pods(namespace string) []*corev1.Pod { return c.snap.pods[namespace] }

// Claim is the named claim, or nil.
func (c *Cluster) Claim(namespace, name string) *corev1.PersistentVolumeClaim {
	return c.snap.claims[claimKey(namespace, name)]
}

// Claims are all the claims of the cluster, in no order.
func (c *Cluster) Claims() []*corev1.PersistentVolumeClaim {
	out := make([]*corev1.PersistentVolumeClaim, 0, len(c.snap.claims))
	for _, pvc := range c.snap.claims {
		out = append(out, pvc)
	}
	return out
}

// ReplicaSetOwner resolves a ReplicaSet to its Deployment, for identity.SourcePath.
func (c *Cluster) ReplicaSetOwner() identity.OwnerOfReplicaSet { return c.snap.rsOwner }

// Live says whether a pod still holds data to protect: a run looks at no other pod.
func Live(pod *corev1.Pod) bool { return live(pod) }

// SelectVolumes runs the selection of a policy run (the code the policy controller
// runs, with the same CEL cost budget per pass; budget 0 is celpolicy.PassCostBudget)
// over the cluster, and calls visit for every live pod volume the selector picks: skip
// is "" when a run would back it up, else the reason the run would skip it (HostPath,
// PodNotRunning, SelectorError, ...). Volumes the selector does not pick are not
// visited. InFlight, which depends on the policy's earlier runs, is not applied.
//
// visitClaim is called, when not nil, for every claim no live pod uses that the
// selector picks (evaluated with pod = null on UnmountedVolume): skip is "" when a
// run backs it up through a reader pod (claims Backup), else the reason (NotMounted
// for Skip, BlockMode, HostPath, SelectorBudgetExceeded).
func SelectVolumes(sel *celpolicy.Selector, c *Cluster, budget uint64, claims v1.ClaimsWithoutPods,
	visit func(pod *corev1.Pod, vol *corev1.Volume, skip string), visitClaim func(pvc *corev1.PersistentVolumeClaim, skip string)) {
	snap := *c.snap
	snap.costBudget = budget
	snap.backedUpPaths = nil
	selectVolumesVisit(sel, &snap, claims, visit, visitClaim)
}
