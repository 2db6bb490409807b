package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func newEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestValidateRejects(t *testing.T) {
	e := newEngine(t)
	tests := []struct {
		name       string
		selector   v1.VolumeSelector
		field      string
		typ        ErrorType
		wantDetail string
		line, col  int
	}{
		{"misspelt field", v1.VolumeSelector{Volumes: `pvc.spec.storageClasName == "fast"`},
			FieldVolumes, ErrorInvalid, "undefined field 'storageClasName'", 1, 9},
		{"unknown variable in namespaces", v1.VolumeSelector{Namespaces: `pod.metadata.name == "x"`},
			FieldNamespaces, ErrorInvalid, "undeclared reference to 'pod'", 1, 1},
		{"syntax error on line 2", v1.VolumeSelector{Volumes: "volume.name == \"a\" &&\n  volume.name ==="},
			FieldVolumes, ErrorInvalid, "Syntax error", 2, 17},
		{"not bool", v1.VolumeSelector{Volumes: `volume.name`},
			FieldVolumes, ErrorInvalid, "expression must return bool, but returns string", 0, 0},
		{"int instead of bool", v1.VolumeSelector{Namespaces: `size(namespace.metadata.labels)`},
			FieldNamespaces, ErrorInvalid, "expression must return bool, but returns int", 0, 0},
		{"wrong operand types", v1.VolumeSelector{Volumes: `volume.name == 1`},
			FieldVolumes, ErrorInvalid, "found no matching overload for '_==_'", 1, 13},
		{"too costly", v1.VolumeSelector{Volumes: `pod.spec.containers.all(c, pod.spec.containers.all(d, c.env.all(x, d.env.exists(y, x.name == y.name))))`},
			FieldVolumes, ErrorTooCostly, "exceeds the limit of 1000000", 0, 0},
		{"too long", v1.VolumeSelector{Volumes: strings.Repeat("true && ", 600) + "true"},
			FieldVolumes, ErrorTooLong, "more than the limit of 4096", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Validate(tt.selector)
			errs := Errors(err)
			if len(errs) != 1 {
				t.Fatalf("Validate = %v, want one error", err)
			}
			got := errs[0]
			if got.Field != tt.field || got.Type != tt.typ || !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("got %s %s %q, want %s %s containing %q", got.Field, got.Type, got.Detail, tt.field, tt.typ, tt.wantDetail)
			}
			if got.Line != tt.line || got.Column != tt.col {
				t.Errorf("position %d:%d, want %d:%d (%s)", got.Line, got.Column, tt.line, tt.col, got.Detail)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("message %q does not start with the field path", err)
			}
		})
	}
}

func TestValidateReportsBothFields(t *testing.T) {
	err := newEngine(t).Validate(v1.VolumeSelector{Namespaces: `1`, Volumes: `pod.nope`})
	errs := Errors(err)
	if len(errs) != 2 || errs[0].Field != FieldNamespaces || errs[1].Field != FieldVolumes {
		t.Fatalf("Validate = %v, want one error per field", err)
	}
}

func fixture() Volume {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"backup": "gold"}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop", Labels: map[string]string{"app": "db"},
			Annotations: map[string]string{"backup.velero.io/backup-volumes": "data,logs"}},
		Spec: corev1.PodSpec{NodeName: "node-1", Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data-db-0", Namespace: "shop"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: new("fast"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}},
	}
	return Volume{Namespace: ns, Pod: pod, Volume: &pod.Spec.Volumes[0], PVC: pvc}
}

func TestMatchVolume(t *testing.T) {
	e := newEngine(t)
	claim := fixture()
	emptyDir := fixture()
	emptyDir.Volume = &corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	emptyDir.PVC = nil
	// A pod and a namespace with neither labels nor annotations, as most have.
	bare := fixture()
	bare.Pod = bare.Pod.DeepCopy()
	bare.Pod.Labels, bare.Pod.Annotations = nil, nil
	bare.Namespace = bare.Namespace.DeepCopy()
	bare.Namespace.Labels, bare.Namespace.Annotations = nil, nil
	tests := []struct {
		expr string
		in   Volume
		want bool
	}{
		{`pvc != null && pvc.spec.storageClassName == "fast"`, claim, true},
		{`pvc != null && pvc.spec.storageClassName == "fast"`, emptyDir, false},
		{`pvc == null`, emptyDir, true},
		{`namespace.metadata.labels[?"backup"].orValue("") == "gold"`, claim, true},
		{`pod.metadata.labels["app"] == "db" && pod.spec.nodeName == "node-1"`, claim, true},
		{`volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`, claim, true},
		{`volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`, emptyDir, false},
		{`!has(volume.emptyDir)`, emptyDir, false},
		{`quantity(pvc.spec.resources.requests["storage"]).isGreaterThan(quantity("5Gi"))`, claim, true},
		{`pod.status.phase == "Running"`, claim, true},
		{`volume.name.startsWith("ca")`, emptyDir, true},
		{`volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`, bare, false},
		{`!(volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes-excludes"].orValue("").split(","))`, bare, true},
		{`pod.metadata.labels[?"app"].orValue("") == ""`, bare, true},
		{`namespace.metadata.labels[?"backup"].orValue("none") == "none"`, bare, true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			sel, err := e.Compile(v1.VolumeSelector{Volumes: tt.expr})
			if err != nil {
				t.Fatal(err)
			}
			got, err := sel.MatchVolume(tt.in, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("MatchVolume = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchNamespaceAndEmptySelector(t *testing.T) {
	e := newEngine(t)
	all, err := e.Compile(v1.VolumeSelector{})
	if err != nil {
		t.Fatal(err)
	}
	in := fixture()
	if ok, err := all.MatchNamespace(in.Namespace, nil); !ok || err != nil {
		t.Errorf("empty namespace selector = %v, %v; want true", ok, err)
	}
	if ok, err := all.MatchVolume(in, nil); !ok || err != nil {
		t.Errorf("empty volume selector = %v, %v; want true", ok, err)
	}
	gold, err := e.Compile(v1.VolumeSelector{Namespaces: `namespace.metadata.labels[?"backup"].orValue("") == "silver"`})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := gold.MatchNamespace(in.Namespace, nil); ok || err != nil {
		t.Errorf("MatchNamespace = %v, %v; want false", ok, err)
	}
}

func TestEvaluationErrorIsTyped(t *testing.T) {
	e := newEngine(t)
	sel, err := e.Compile(v1.VolumeSelector{Volumes: `pod.metadata.labels["missing"] == "x"`})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sel.MatchVolume(fixture(), nil)
	var perr *Error
	if !errors.As(err, &perr) || perr.Type != ErrorEvaluation || perr.Field != FieldVolumes || !strings.Contains(perr.Detail, "no such key") {
		t.Fatalf("MatchVolume error = %#v, want an Evaluation error naming the field", err)
	}
}

func TestRuntimeCostLimit(t *testing.T) {
	e := newEngine(t)
	// An annotation longer than the bounds the estimate assumes makes the loop run
	// longer than estimated; the limit is lowered so the test stays fast.
	e.runtimeCostLimit = 5000
	sel, err := e.Compile(v1.VolumeSelector{Volumes: `pod.metadata.annotations[?"big"].orValue("").split("").all(a, a != "#")`})
	if err != nil {
		t.Fatal(err)
	}
	in := fixture()
	in.Pod.Annotations = map[string]string{"big": strings.Repeat("x", 20_000)}
	_, err = sel.MatchVolume(in, nil)
	var perr *Error
	if !errors.As(err, &perr) || perr.Type != ErrorEvaluation || !strings.Contains(perr.Detail, "cost limit") {
		t.Fatalf("MatchVolume = %v, want the runtime cost limit to stop it", err)
	}
}

func TestForPolicyCachesPerGeneration(t *testing.T) {
	e := newEngine(t)
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: types.UID("u1"), Generation: 1},
		Spec: v1.VolumeBackupPolicySpec{Selector: v1.VolumeSelector{Volumes: `pvc != null`}}}
	a, err := e.ForPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := e.ForPolicy(p); b != a {
		t.Error("same generation compiled twice")
	}
	p.Generation, p.Spec.Selector.Volumes = 2, `pvc == null`
	if c, _ := e.ForPolicy(p); c == a {
		t.Error("new generation served the old program")
	}
	p.Generation, p.Spec.Selector.Volumes = 3, `pvc.nope`
	if _, err := e.ForPolicy(p); len(Errors(err)) != 1 {
		t.Errorf("ForPolicy of a bad selector = %v, want its error (cached too)", err)
	}
	p.UID = "u2" // deleted and created again under the same name, generation 3 again
	p.Spec.Selector.Volumes = `pvc != null`
	if _, err := e.ForPolicy(p); err != nil {
		t.Errorf("a recreated policy got the old policy's cached error: %v", err)
	}
	e.Forget(p.Name)
	if len(e.cache) != 0 {
		t.Error("Forget left the entry")
	}
}

func ExampleEngine_Validate() {
	e, _ := NewEngine()
	err := e.Validate(v1.VolumeSelector{Volumes: `pvc.spec.storageClasName == "fast"`})
	for _, perr := range Errors(err) {
		fmt.Printf("%s at %d:%d\n", perr.Field, perr.Line, perr.Column)
	}
	// Output: spec.selector.volumes at 1:9
}

// TestPassCostBudget: the evaluations through one Cache share a budget; once it is
// spent, the next evaluation is refused with ErrorBudget instead of run (review L4).
func TestPassCostBudget(t *testing.T) {
	e := newEngine(t)
	sel, err := e.Compile(v1.VolumeSelector{Volumes: `pod.metadata.annotations.exists(k, k == "backup")`})
	if err != nil {
		t.Fatal(err)
	}
	in := fixture()
	cache := &Cache{Budget: 1}
	if _, err := sel.MatchVolume(in, cache); err != nil {
		t.Fatalf("the first evaluation: %v", err)
	}
	if cache.Spent() == 0 {
		t.Fatal("the evaluation was not charged to the budget")
	}
	_, err = sel.MatchVolume(in, cache)
	var perr *Error
	if !errors.As(err, &perr) || perr.Type != ErrorBudget || perr.Field != FieldVolumes {
		t.Fatalf("MatchVolume after the budget = %v, want ErrorBudget", err)
	}
	if _, err := sel.MatchVolume(in, &Cache{}); err != nil {
		t.Errorf("a fresh pass with the default budget: %v", err)
	}
}
