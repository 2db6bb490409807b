package install

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The cert-manager component anchors the webhook's trust in a CA, not in the serving
// certificate: selfSigned Issuer -> CA Certificate -> CA Issuer -> serving
// Certificate, and cainjector fills every caBundle from the CA. A serving-certificate
// renewal then leaves the caBundle as it is, and a CA renewal keeps the CA's key, so
// an API server that sees a new caBundle late still trusts what the webhook serves.
func TestCertManagerTrustsACANotTheLeaf(t *testing.T) {
	b := build(t, overlay(t, []string{"config/default"}, []string{"config/certmanager"}, ""))
	str := func(o *unstructured.Unstructured, path ...string) string {
		s, _, _ := unstructured.NestedString(o.Object, path...)
		return s
	}
	// issuer returns the namespaced Issuer a Certificate names (a ClusterIssuer would
	// live outside what Holdfast installs).
	issuer := func(cert *unstructured.Unstructured) *unstructured.Unstructured {
		t.Helper()
		if kind := str(cert, "spec", "issuerRef", "kind"); kind != "Issuer" {
			t.Fatalf("Certificate %s is issued by a %q, want an Issuer the component installs", cert.GetName(), kind)
		}
		return b.find("Issuer", str(cert, "spec", "issuerRef", "name"))
	}
	certificateWritingSecret := func(secret string) *unstructured.Unstructured {
		t.Helper()
		for _, c := range b.ofKind("Certificate") {
			if str(c, "spec", "secretName") == secret {
				return c
			}
		}
		t.Fatalf("no Certificate writes Secret %s", secret)
		return nil
	}

	leaf := b.find("Certificate", "holdfast-webhook-serving-cert")
	if isCA, _, _ := unstructured.NestedBool(leaf.Object, "spec", "isCA"); isCA {
		t.Error("the serving certificate is a CA")
	}
	leafIssuer := issuer(leaf)
	caSecret := str(leafIssuer, "spec", "ca", "secretName")
	if caSecret == "" {
		t.Fatalf("the serving certificate's Issuer %s is not a CA issuer (spec %v): its own certificate would be the trust anchor, changed at every renewal", leafIssuer.GetName(), leafIssuer.Object["spec"])
	}
	ca := certificateWritingSecret(caSecret)
	if isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA"); !isCA {
		t.Errorf("Certificate %s behind the CA Issuer lacks isCA: true", ca.GetName())
	}
	if caSecret == str(leaf, "spec", "secretName") {
		t.Error("the CA and the serving certificate share a Secret")
	}
	if _, found, _ := unstructured.NestedMap(issuer(ca).Object, "spec", "selfSigned"); !found {
		t.Errorf("the CA Certificate %s is not self-signed", ca.GetName())
	}
	// cert-manager 1.18 and later default to Always: a renewed CA with a new key would
	// not verify the serving certificates its predecessor signed.
	if got := str(ca, "spec", "privateKey", "rotationPolicy"); got != "Never" {
		t.Errorf("CA Certificate %s has privateKey.rotationPolicy %q, want Never (a CA renewal keeps the key, so no caBundle catch-up window)", ca.GetName(), got)
	}

	// cainjector injects the CA itself.
	webhookConfigs := append(b.ofKind("ValidatingWebhookConfiguration"), b.ofKind("MutatingWebhookConfiguration")...)
	if len(webhookConfigs) == 0 {
		t.Fatal("no webhook configuration in the build")
	}
	for _, o := range webhookConfigs {
		from := o.GetAnnotations()["cert-manager.io/inject-ca-from"]
		namespace, name, _ := strings.Cut(from, "/")
		if namespace != ca.GetNamespace() || name != ca.GetName() {
			t.Errorf("%s %s: cert-manager.io/inject-ca-from = %q, want the CA Certificate %s/%s", o.GetKind(), o.GetName(), from, ca.GetNamespace(), ca.GetName())
		}
	}
}
