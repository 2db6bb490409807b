package prometheus

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// RuleFile is the rule file a Prometheus loads from the PrometheusRule among objs (a
// kustomize build of config/prometheus): its spec, the groups, byte for byte as the
// operator hands them to Prometheus. promtool tests it here; the e2e Prometheus loads it.
func RuleFile(objs []*unstructured.Unstructured) ([]byte, error) {
	for _, o := range objs {
		if o.GetKind() != "PrometheusRule" {
			continue
		}
		groups, ok, err := unstructured.NestedFieldNoCopy(o.Object, "spec", "groups")
		if err != nil || !ok {
			return nil, fmt.Errorf("PrometheusRule %s has no spec.groups (%v)", o.GetName(), err)
		}
		return yaml.Marshal(map[string]any{"groups": groups})
	}
	return nil, fmt.Errorf("the build has no PrometheusRule")
}
