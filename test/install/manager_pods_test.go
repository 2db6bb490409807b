package install

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestTheManagerTouchesOnlyThePodsItHolds: RBAC lets the manager patch and delete every
// pod, because it releases the pods the restore webhook held behind its scheduling gate.
// The plain install's ValidatingAdmissionPolicy narrows that to exactly those pods, and
// to removing the gate, so a stolen manager token cannot stop or rewrite an application.
func TestTheManagerTouchesOnlyThePodsItHolds(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	manager := as(t, e, rest.ImpersonationConfig{UserName: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}})

	pod := func(name string, gated bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "db"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		if gated {
			p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: restorewait.SchedulingGate}}
		}
		if err := e.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	running := pod("running", false)

	// The policy is in force once the API server has loaded it: wait for its first
	// denial rather than for a time.
	if err := testenv.Poll(ctx, 2*time.Minute, func() error {
		err := manager.Delete(ctx, running.DeepCopy(), client.DryRunAll)
		if err == nil {
			return fmt.Errorf("the manager could still delete a pod it does not hold")
		}
		if !strings.Contains(err.Error(), "changes or deletes only pods it holds") {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	denied := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a denial saying %q", what, err, want)
		}
	}
	relabeled := running.DeepCopy()
	relabeled.Labels["app"] = "other"
	denied("the manager relabeling a pod it does not hold", manager.Patch(ctx, relabeled, client.MergeFrom(running)), "carries none")
	reimaged := running.DeepCopy()
	reimaged.Spec.Containers[0].Image = "evil:1"
	denied("the manager changing the image of a pod it does not hold", manager.Patch(ctx, reimaged, client.MergeFrom(running)), "carries none")

	held := pod("held", true)
	heldReimaged := held.DeepCopy()
	heldReimaged.Spec.Containers[0].Image = "evil:1"
	denied("the manager changing a held pod's image", manager.Patch(ctx, heldReimaged, client.MergeFrom(held)), "only remove its scheduling gate")
	heldRelabeled := held.DeepCopy()
	heldRelabeled.Labels["app"] = "other"
	denied("the manager relabeling a held pod", manager.Patch(ctx, heldRelabeled, client.MergeFrom(held)), "only remove its scheduling gate")

	// What the manager does need: remove the gate of a bare held pod, delete a held pod.
	released := held.DeepCopy()
	released.Spec.SchedulingGates = nil
	if err := manager.Patch(ctx, released, client.MergeFrom(held)); err != nil {
		t.Errorf("the manager removing its gate from a held pod: %v", err)
	}
	deletable := pod("held-for-deletion", true)
	if err := manager.Delete(ctx, deletable, client.Preconditions{UID: &deletable.UID}); err != nil {
		t.Errorf("the manager deleting a held pod: %v", err)
	}
	// Once released, the pod is like any other.
	denied("the manager deleting a pod it released", manager.Delete(ctx, released, client.DryRunAll), "carries none")
}

// TestTheManagerCreatesOnlyReaderPods: to back up a claim no pod uses the manager
// creates a reader pod that mounts it read-only, and deletes it afterwards. The
// policy lets it create pods of exactly that shape and delete only pods labelled as
// reader pods, so a stolen manager token cannot start a pod that writes to a claim,
// runs privileged or carries a token, nor delete an application's pod.
func TestTheManagerCreatesOnlyReaderPods(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	manager := as(t, e, rest.ImpersonationConfig{UserName: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}})
	reader := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
				"app.kubernetes.io/managed-by": "holdfast", "app.kubernetes.io/component": "claim-reader"}},
			Spec: corev1.PodSpec{
				AutomountServiceAccountToken: new(false),
				Containers: []corev1.Container{{Name: "reader", Image: "holdfast:dev", Args: []string{"pause"},
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data", ReadOnly: true}}}},
			},
		}
	}
	// The policy is in force once the API server has loaded it.
	notReader := reader("app")
	notReader.Labels = map[string]string{"app": "db"}
	if err := testenv.Poll(ctx, 2*time.Minute, func() error {
		err := manager.Create(ctx, notReader.DeepCopy(), client.DryRunAll)
		if err == nil {
			return fmt.Errorf("the manager could still create a pod that is not a reader pod")
		}
		if !strings.Contains(err.Error(), "creates only reader pods") {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	denied := func(what string, mutate func(*corev1.Pod)) {
		t.Helper()
		p := reader("denied")
		mutate(p)
		if err := manager.Create(ctx, p, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "creates only reader pods") {
			t.Errorf("the manager creating %s: %v, want a denial", what, err)
		}
	}
	denied("a reader pod that mounts its claim writable", func(p *corev1.Pod) { p.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = false })
	denied("a reader pod whose mount is writable", func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts[0].ReadOnly = false })
	denied("a reader pod with a token", func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil })
	denied("a reader pod on the host's network", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	denied("a privileged reader pod", func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
	})
	denied("a reader pod with a hostPath volume", func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
	})
	denied("a reader pod with a second container", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "evil:1"})
	})

	// Writer pods, which restore a claim no pod uses: the claim alone, writable, and
	// nothing but holdfast pause.
	writer := func(name string) *corev1.Pod {
		p := reader(name)
		p.Labels["app.kubernetes.io/component"] = "claim-writer"
		p.Spec.Containers[0].Name = "writer"
		p.Spec.Containers[0].VolumeMounts[0].ReadOnly = false
		p.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = false
		return p
	}
	deniedWriter := func(what string, mutate func(*corev1.Pod)) {
		t.Helper()
		p := writer("denied")
		mutate(p)
		if err := manager.Create(ctx, p, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "creates only reader pods") {
			t.Errorf("the manager creating %s: %v, want a denial", what, err)
		}
	}
	deniedWriter("a writer pod that mounts a second claim", func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "more", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "other"}}})
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "more", MountPath: "/more"})
	})
	deniedWriter("a writer pod with a second claim it does not mount", func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "more", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "other"}}})
	})
	deniedWriter("a writer pod that mounts an emptyDir instead of a claim", func(p *corev1.Pod) {
		p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	})
	deniedWriter("a writer pod with a hostPath volume", func(p *corev1.Pod) {
		p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}
	})
	deniedWriter("a writer pod that runs a shell", func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"sh", "-c", "rm -rf /data"} })
	deniedWriter("a writer pod with its own command", func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/bin/sh"} })
	deniedWriter("a writer pod with a token", func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil })
	deniedWriter("a writer pod with a second container", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "evil:1", Args: []string{"pause"}})
	})
	deniedWriter("a privileged writer pod", func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
	})
	deniedWriter("a writer pod on the host's network", func(p *corev1.Pod) { p.Spec.HostNetwork = true })

	// What the manager needs: create a reader pod and a writer pod, and delete them.
	for _, ok := range []*corev1.Pod{reader("reader"), writer("writer")} {
		if err := manager.Create(ctx, ok); err != nil {
			t.Fatalf("the manager creating pod %s: %v", ok.Name, err)
		}
		if err := manager.Delete(ctx, ok, client.Preconditions{UID: &ok.UID}); err != nil {
			t.Errorf("the manager deleting its pod %s: %v", ok.Name, err)
		}
	}
	// An application's pod it still may not delete.
	app := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Labels: map[string]string{"app": "db"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if err := e.Client.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := manager.Delete(ctx, app, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "carries none") {
		t.Errorf("the manager deleting an application's pod: %v, want a denial", err)
	}
}
