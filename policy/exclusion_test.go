package policy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The coverage exclusion is held to the selector's rules: bool, type-checked, length
// and cost limits, errors naming spec.coverage.exclude.
func TestValidateExclusionRejects(t *testing.T) {
	e := newEngine(t)
	tests := []struct {
		name, expr string
		typ        ErrorType
		detail     string
	}{
		{"misspelt field", `pvc.spec.storageClasName == "fast"`, ErrorInvalid, "undefined field 'storageClasName'"},
		{"not bool", `volume.name`, ErrorInvalid, "must return bool, but returns string"},
		{"too costly", `pod.spec.containers.all(c, pod.spec.containers.all(d, c.env.all(x, d.env.exists(y, x.name == y.name))))`, ErrorTooCostly, "exceeds the limit of 1000000"},
		{"too long", strings.Repeat("true && ", 600) + "true", ErrorTooLong, "more than the limit of 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := Errors(e.ValidateExclusion(tt.expr))
			if len(errs) != 1 {
				t.Fatalf("ValidateExclusion = %v, want one error", errs)
			}
			if errs[0].Field != FieldCoverageExclude || errs[0].Type != tt.typ || !strings.Contains(errs[0].Detail, tt.detail) {
				t.Errorf("got %s %s %q, want %s %s containing %q", errs[0].Field, errs[0].Type, errs[0].Detail, FieldCoverageExclude, tt.typ, tt.detail)
			}
		})
	}
}

func TestExclusionMatch(t *testing.T) {
	e := newEngine(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}}
	cache := &corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	data := &corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "shop"}}
	tests := []struct {
		name, expr string
		in         Volume
		want       bool
	}{
		{"empty matches nothing", "", Volume{Namespace: ns, Pod: pod, Volume: cache}, false},
		{"cache emptyDir", `has(volume.emptyDir) && volume.name == "cache"`, Volume{Namespace: ns, Pod: pod, Volume: cache}, true},
		{"not the claim", `has(volume.emptyDir) && volume.name == "cache"`, Volume{Namespace: ns, Pod: pod, Volume: data, PVC: pvc}, false},
		{"unmounted claim: pod is null", `pod == null && pvc != null`, Volume{Namespace: ns, Volume: data, PVC: pvc}, true},
		{"mounted claim: pod is set", `pod == null && pvc != null`, Volume{Namespace: ns, Pod: pod, Volume: data, PVC: pvc}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := e.CompileExclusion(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := x.Match(tt.in, &Cache{})
			if err != nil || got != tt.want {
				t.Errorf("Match = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	p := &v1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 1},
		Spec: v1.VolumeBackupPolicySpec{Coverage: &v1.CoverageSpec{Exclude: `volume.name == "cache"`}}}
	x1, err := e.ExclusionForPolicy(p)
	if err != nil || x1 == nil {
		t.Fatalf("ExclusionForPolicy = %v, %v", x1, err)
	}
	if x2, _ := e.ExclusionForPolicy(p); x2 != x1 {
		t.Error("the same generation compiled again")
	}
	p.Spec.Coverage.Exclude, p.Generation = "", 2
	if x3, err := e.ExclusionForPolicy(p); x3 != nil || err != nil {
		t.Errorf("a removed exclusion = %v, %v; want nil, nil", x3, err)
	}
}
