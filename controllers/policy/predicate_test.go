package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func TestPodChangeMatters(t *testing.T) {
	base := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "1"}},
		Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	tests := []struct {
		name   string
		change func(*corev1.Pod)
		want   bool
	}{
		{"container status only", func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.1" }, false},
		{"phase", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, true},
		{"node", func(p *corev1.Pod) { p.Spec.NodeName = "m" }, true},
		{"label", func(p *corev1.Pod) { p.Labels = map[string]string{"a": "2"} }, true},
		{"annotation", func(p *corev1.Pod) { p.Annotations = map[string]string{"backup.velero.io/backup-volumes": "x"} }, true},
		{"deleting", func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }, true},
	}
	for _, tt := range tests {
		n := base.DeepCopy()
		tt.change(n)
		if got := PodChangeMatters.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: n}); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
