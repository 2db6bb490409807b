package policy

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// fuzzExpressions touch every variable, optional access, string functions, maps, lists
// and numbers, so that odd objects reach every kind of value.
var fuzzExpressions = []string{
	`pvc != null && pvc.spec.storageClassName == "fast"`,
	`volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`,
	`namespace.metadata.labels[?"backup"].orValue("") == "gold" && pod.status.phase == "Running"`,
	`pod.spec.containers.exists(c, c.image.startsWith("postgres")) || has(volume.emptyDir)`,
	`pvc != null && quantity(pvc.spec.resources.requests[?"storage"].orValue("0")).isGreaterThan(quantity("1Gi"))`,
	`pod.metadata.creationTimestamp < timestamp("2030-01-01T00:00:00Z")`,
	`pod.spec.nodeName.lowerAscii().contains("x") && pod.metadata.ownerReferences.all(o, o.controller)`,
	`volume.?emptyDir.?sizeLimit.orValue("") != "" && pod.spec.?priority.orValue(0) > 10`,
}

// FuzzEvaluate feeds arbitrary JSON as the namespace, pod, volume and claim (and an
// arbitrary expression) and checks that evaluation returns a value or an error, never
// panics. Run it longer with: go test ./policy -run '^$' -fuzz FuzzEvaluate -fuzztime 1m
func FuzzEvaluate(f *testing.F) {
	in := fixture()
	seed := func(v any) []byte { b, _ := json.Marshal(v); return b }
	f.Add(seed(in.Namespace), seed(in.Pod), seed(in.Volume), seed(in.PVC), fuzzExpressions[0])
	f.Add([]byte(`{"metadata":{"labels":{"backup":1}}}`), []byte(`{"spec":{"containers":[{}],"priority":-1}}`),
		[]byte(`{"name":"","emptyDir":{"sizeLimit":"1Ei"}}`), []byte(`null`), `volume.name.size() > 0`)
	f.Add([]byte(`{}`), []byte(`{"metadata":{"creationTimestamp":"1970-01-01T00:00:00Z","ownerReferences":[{"controller":true}]}}`),
		[]byte(`{}`), []byte(`{"spec":{"resources":{"requests":{"storage":"-3"}}}}`), `pvc == null`)

	e, err := NewEngine()
	if err != nil {
		f.Fatal(err)
	}
	var compiled []*Selector
	for _, x := range fuzzExpressions {
		s, err := e.Compile(v1.VolumeSelector{Volumes: x, Namespaces: `namespace.metadata.name != ""`})
		if err != nil {
			f.Fatalf("%s: %v", x, err)
		}
		compiled = append(compiled, s)
	}
	f.Fuzz(func(t *testing.T, nsJSON, podJSON, volJSON, pvcJSON []byte, expr string) {
		var v Volume
		v.Namespace, v.Pod, v.Volume = &corev1.Namespace{}, &corev1.Pod{}, &corev1.Volume{}
		_ = json.Unmarshal(nsJSON, v.Namespace)
		_ = json.Unmarshal(podJSON, v.Pod)
		_ = json.Unmarshal(volJSON, v.Volume)
		if len(pvcJSON) > 0 && string(pvcJSON) != "null" {
			v.PVC = &corev1.PersistentVolumeClaim{}
			_ = json.Unmarshal(pvcJSON, v.PVC)
		}
		sels := compiled
		if s, err := e.Compile(v1.VolumeSelector{Volumes: expr}); err == nil {
			sels = append(sels[:len(sels):len(sels)], s)
		}
		for _, s := range sels {
			cache := &Cache{}
			if _, err := s.MatchNamespace(v.Namespace, cache); err != nil {
				assertNoPanic(t, err)
			}
			if _, err := s.MatchVolume(v, cache); err != nil {
				assertNoPanic(t, err)
			}
		}
	})
}

func assertNoPanic(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), "evaluation panicked") {
		t.Fatal(err)
	}
}
