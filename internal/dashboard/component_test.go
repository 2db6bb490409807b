package dashboard

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/test/kustomize"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// config/grafana added to config/default, as docs/monitoring.md tells users to, makes
// one ConfigMap that the Grafana sidecar loads, holding the committed dashboard byte for
// byte, under a fixed name.
func TestComponentShipsTheDashboard(t *testing.T) {
	dir, err := kustomize.Overlay(t.TempDir(), []string{"config/default"}, []string{"config/grafana"}, "")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kustomize.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []corev1.ConfigMap
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" || o.GetLabels()["grafana_dashboard"] == "" {
			continue
		}
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict(data, &cm); err != nil {
			t.Fatalf("ConfigMap %s: %v", o.GetName(), err)
		}
		found = append(found, cm)
	}
	if len(found) != 1 {
		t.Fatalf("the build has %d ConfigMaps labelled grafana_dashboard, want 1", len(found))
	}
	cm := found[0]
	if cm.Name != "holdfast-dashboard" || cm.Namespace != "holdfast-system" {
		t.Errorf("ConfigMap %s/%s, want holdfast-system/holdfast-dashboard (a fixed name, no hash suffix)", cm.Namespace, cm.Name)
	}
	if v := cm.Labels["grafana_dashboard"]; v != "1" {
		t.Errorf("label grafana_dashboard=%q, want \"1\" (the sidecar's default)", v)
	}
	want, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), committed))
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["holdfast-dashboard.json"]; got != string(want) {
		t.Errorf("the ConfigMap's holdfast-dashboard.json is not %s (%d bytes, want %d)", committed, len(got), len(want))
	}
	if len(cm.Data) != 1 || len(cm.BinaryData) != 0 {
		t.Errorf("the ConfigMap holds %d entries, want the dashboard only", len(cm.Data)+len(cm.BinaryData))
	}
}
