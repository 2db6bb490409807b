package install

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/holdfast-dev/holdfast/internal/webhookcert"
)

// The pod webhook, as every install ships it, is called only where a restore can need
// it, fails open, and keeps the API server waiting at most two seconds: the system
// namespaces and the manager's own are out of its scope, so neither the control plane
// nor the manager's next pod depends on the manager answering.
func TestPodWebhookScope(t *testing.T) {
	for _, dir := range []string{"config/default", "kustomize/openshift", "kustomize/tkgi", "kustomize/rancheros", "kustomize/local"} {
		t.Run(dir, func(t *testing.T) {
			b := build(t, dir)
			d, _ := b.manager()
			cfg := into[admissionregistrationv1.MutatingWebhookConfiguration](t, b.find("MutatingWebhookConfiguration", webhookcert.DefaultMutatingWebhookConfiguration))
			var wh *admissionregistrationv1.MutatingWebhook
			for i := range cfg.Webhooks {
				if cfg.Webhooks[i].Name == "restore-wait.holdfast.dev" {
					wh = &cfg.Webhooks[i]
				}
			}
			if wh == nil {
				t.Fatalf("no webhook restore-wait.holdfast.dev in %s", cfg.Name)
			}
			if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Ignore {
				t.Errorf("failurePolicy %v, want Ignore: a manager outage must not block pod creation", wh.FailurePolicy)
			}
			if got := ptr.Deref(wh.TimeoutSeconds, 10); got != 2 {
				t.Errorf("timeoutSeconds %d, want 2: the API server waits that long on every pod creation when the manager hangs", got)
			}

			nsSel := selector(t, "namespaceSelector", wh.NamespaceSelector)
			for _, c := range []struct {
				labels labels.Set
				called bool
			}{
				{labels.Set{"kubernetes.io/metadata.name": "kube-system"}, false},
				{labels.Set{"kubernetes.io/metadata.name": "kube-public"}, false},
				{labels.Set{"kubernetes.io/metadata.name": "kube-node-lease"}, false},
				{labels.Set{"kubernetes.io/metadata.name": d.Namespace}, false},
				{labels.Set{"kubernetes.io/metadata.name": "shop", "backup.holdfast.dev/skip-restore-wait": "true"}, false},
				{labels.Set{"kubernetes.io/metadata.name": "shop"}, true},
				{labels.Set{"kubernetes.io/metadata.name": "default", "team": "a"}, true},
			} {
				if got := nsSel.Matches(c.labels); got != c.called {
					t.Errorf("namespace %v: webhook called %v, want %v (the manager runs in %s)", c.labels, got, c.called, d.Namespace)
				}
			}
			objSel := selector(t, "objectSelector", wh.ObjectSelector)
			if objSel.Matches(labels.Set{"backup.holdfast.dev/skip-restore-wait": "true", "app": "web"}) {
				t.Error("a pod labelled backup.holdfast.dev/skip-restore-wait=true is still sent to the webhook")
			}
			// The GitOps flow: an application's pods carry no Holdfast label.
			if !objSel.Matches(labels.Set{"app": "web"}) || !objSel.Matches(labels.Set{}) {
				t.Error("the objectSelector leaves out ordinary pods: restore-wait would never be added")
			}
		})
	}
}

func selector(t *testing.T, field string, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	if s == nil {
		t.Fatalf("the pod webhook has no %s: every pod creation in the cluster calls the manager", field)
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	return sel
}
