package prometheus

import (
	"regexp"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// The monitors decode as the Prometheus Operator's types with no field left over, and
// pass the operator's own checks of their HTTP settings.
func TestMonitorsDecodeStrictly(t *testing.T) {
	objs := buildWithComponent(t, "")
	sm := decodeStrict[monitoringv1.ServiceMonitor](t, find(t, objs, "ServiceMonitor", "holdfast-manager"))
	for i := range sm.Spec.Endpoints {
		if err := sm.Spec.Endpoints[i].HTTPConfigWithProxyAndTLSFiles.Validate(); err != nil {
			t.Errorf("ServiceMonitor endpoint %d: %v", i, err)
		}
	}
	pm := decodeStrict[monitoringv1.PodMonitor](t, find(t, objs, "PodMonitor", "holdfast-agent"))
	for i := range pm.Spec.PodMetricsEndpoints {
		if err := pm.Spec.PodMetricsEndpoints[i].HTTPConfigWithProxy.Validate(); err != nil {
			t.Errorf("PodMonitor endpoint %d: %v", i, err)
		}
	}
	decodeStrict[monitoringv1.PrometheusRule](t, find(t, objs, "PrometheusRule", "holdfast"))
}

// The ServiceMonitor scrapes the manager's metrics Service and nothing else: the
// webhook Service carries the same labels and the same port name, so only the keep
// rule on the Service name tells them apart.
func TestServiceMonitorScrapesOnlyTheMetricsService(t *testing.T) {
	objs := buildWithComponent(t, "")
	sm := decodeStrict[monitoringv1.ServiceMonitor](t, find(t, objs, "ServiceMonitor", "holdfast-manager"))
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("want one endpoint, got %d", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	selector := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)

	var scraped []string
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetNamespace() != sm.Namespace || !selector.Matches(labels.Set(o.GetLabels())) {
			continue
		}
		svc := decodeStrict[corev1.Service](t, o)
		if !hasServicePort(svc, ep.Port) || !keptByRelabelings(t, ep.RelabelConfigs, "__meta_kubernetes_service_name", svc.Name) {
			continue
		}
		scraped = append(scraped, svc.Name)
	}
	if len(scraped) != 1 || scraped[0] != "holdfast-manager-metrics" {
		t.Fatalf("the ServiceMonitor scrapes Services %v, want only holdfast-manager-metrics", scraped)
	}
	if ep.Scheme == nil || *ep.Scheme != "HTTPS" {
		t.Errorf("scheme %v, want HTTPS: the manager serves metrics over HTTPS only", ep.Scheme)
	}
	checkBearerFromScraperSecret(t, objs, sm.Namespace, ep.Authorization)
}

// The PodMonitor scrapes the agent pods, not the manager's, which also have a port
// named metrics, and gives every agent series its node.
func TestPodMonitorScrapesTheAgents(t *testing.T) {
	objs := buildWithComponent(t, "")
	pm := decodeStrict[monitoringv1.PodMonitor](t, find(t, objs, "PodMonitor", "holdfast-agent"))
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("want one endpoint, got %d", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	selector := labels.SelectorFromSet(pm.Spec.Selector.MatchLabels)

	ds := decodeStrict[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "holdfast-agent"))
	if !selector.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("the PodMonitor's selector %s does not select the agent pods %v", selector, ds.Spec.Template.Labels)
	}
	if ep.Port == nil || !hasContainerPort(&ds.Spec.Template.Spec, *ep.Port) {
		t.Errorf("the agent container has no port %v", ep.Port)
	}
	deploy := decodeStrict[appsv1.Deployment](t, find(t, objs, "Deployment", "holdfast-manager"))
	if selector.Matches(labels.Set(deploy.Spec.Template.Labels)) {
		t.Errorf("the PodMonitor's selector %s also selects the manager pods", selector)
	}
	if ep.Scheme == nil || *ep.Scheme != "HTTPS" {
		t.Errorf("scheme %v, want HTTPS: the agent serves metrics over HTTPS only", ep.Scheme)
	}
	var nodeLabel bool
	for _, r := range ep.RelabelConfigs {
		if len(r.SourceLabels) == 1 && r.SourceLabels[0] == "__meta_kubernetes_pod_node_name" && r.TargetLabel == "node" {
			nodeLabel = true
		}
	}
	if !nodeLabel {
		t.Errorf("no relabeling copies __meta_kubernetes_pod_node_name to node: %+v", ep.RelabelConfigs)
	}
	if !ep.HonorLabels {
		t.Errorf("honorLabels is false: the agent's own node label would become exported_node")
	}
	checkBearerFromScraperSecret(t, objs, pm.Namespace, ep.Authorization)
}

// The monitors' token is that of a ServiceAccount bound to holdfast-metrics-reader, in
// the monitors' namespace (the operator reads credentials from there), wherever an
// overlay moves Holdfast.
func TestScraperTokenFollowsTheNamespace(t *testing.T) {
	for _, tc := range []struct{ name, extra, namespace string }{
		{"config/default", "", "holdfast-system"},
		{"an overlay's namespace", "namespace: backup\n", "backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := buildWithComponent(t, tc.extra)
			for _, kind := range [][2]string{{"ServiceMonitor", "holdfast-manager"}, {"PodMonitor", "holdfast-agent"}, {"PrometheusRule", "holdfast"}, {"Secret", "holdfast-metrics-scraper-token"}, {"ServiceAccount", "holdfast-metrics-scraper"}} {
				if ns := find(t, objs, kind[0], kind[1]).GetNamespace(); ns != tc.namespace {
					t.Errorf("%s %s is in namespace %q, want %q", kind[0], kind[1], ns, tc.namespace)
				}
			}
			sm := decodeStrict[monitoringv1.ServiceMonitor](t, find(t, objs, "ServiceMonitor", "holdfast-manager"))
			checkBearerFromScraperSecret(t, objs, sm.Namespace, sm.Spec.Endpoints[0].Authorization)
		})
	}
}

// checkBearerFromScraperSecret checks that auth sends as bearer token a Secret of
// namespace that holds the token of a ServiceAccount allowed to get /metrics.
func checkBearerFromScraperSecret(t *testing.T, objs []*unstructured.Unstructured, namespace string, auth *monitoringv1.SafeAuthorization) {
	t.Helper()
	if auth == nil || auth.Credentials == nil {
		t.Fatalf("no authorization credentials: manager and agent answer 401 without a token")
	}
	if auth.Type != "" && auth.Type != "Bearer" {
		t.Errorf("authorization type %q, want Bearer", auth.Type)
	}
	secret := decodeStrict[corev1.Secret](t, find(t, objs, "Secret", auth.Credentials.Name))
	if secret.Namespace != namespace || secret.Type != corev1.SecretTypeServiceAccountToken || auth.Credentials.Key != corev1.ServiceAccountTokenKey {
		t.Fatalf("credentials %s/%s key %s (type %s): want the token key of a service-account-token Secret in %s",
			secret.Namespace, secret.Name, auth.Credentials.Key, secret.Type, namespace)
	}
	account := secret.Annotations[corev1.ServiceAccountNameKey]
	sa := find(t, objs, "ServiceAccount", account)
	if sa.GetNamespace() != namespace {
		t.Errorf("ServiceAccount %s is in %s, the Secret in %s", account, sa.GetNamespace(), namespace)
	}
	var roles []string
	for _, o := range objs {
		if o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		crb := decodeStrict[rbacv1.ClusterRoleBinding](t, o)
		for _, s := range crb.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == account && s.Namespace == namespace {
				roles = append(roles, crb.RoleRef.Name)
			}
		}
	}
	if len(roles) != 1 || roles[0] != "holdfast-metrics-reader" {
		t.Fatalf("ServiceAccount %s/%s is bound to ClusterRoles %v, want only holdfast-metrics-reader", namespace, account, roles)
	}
	role := decodeStrict[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "holdfast-metrics-reader"))
	if len(role.Rules) != 1 || len(role.Rules[0].NonResourceURLs) != 1 || role.Rules[0].NonResourceURLs[0] != "/metrics" {
		t.Errorf("holdfast-metrics-reader grants %+v, want get /metrics only", role.Rules)
	}
}

func hasServicePort(svc *corev1.Service, name string) bool {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

func hasContainerPort(spec *corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// keptByRelabelings applies the keep and drop rules of relabelings that read only
// label to value, as Prometheus does (the regex anchored at both ends).
func keptByRelabelings(t *testing.T, relabelings []monitoringv1.RelabelConfig, label, value string) bool {
	t.Helper()
	for _, r := range relabelings {
		if r.Action != "keep" && r.Action != "drop" {
			continue
		}
		if len(r.SourceLabels) != 1 || string(r.SourceLabels[0]) != label {
			t.Fatalf("a %s rule reads %v: this test only knows rules on %s", r.Action, r.SourceLabels, label)
		}
		re := regexp.MustCompile("^(?:" + r.Regex + ")$")
		if re.MatchString(value) != (r.Action == "keep") {
			return false
		}
	}
	return true
}
