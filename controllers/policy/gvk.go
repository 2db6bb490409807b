package policy

import "k8s.io/apimachinery/pkg/runtime/schema"

var (
	replicaSetGVK     = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"}
	replicaSetListGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSetList"}
	nodeListGVK       = schema.GroupVersionKind{Version: "v1", Kind: "NodeList"}
)
