package install

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/browse"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestTheManagerCreatesRelayPodsOfOneShape: a browse session's relay pod is the one
// pod the manager starts that carries a token, so the admission policy admits it only
// as browse.NewRelayPod builds it: holdfast browse-relay, one projected token for the
// audience only the manager accepts, nothing else mounted, nothing privileged.
func TestTheManagerCreatesRelayPodsOfOneShape(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	manager := as(t, e, rest.ImpersonationConfig{UserName: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}})
	if err := e.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	session := &v1.BrowseSession{ObjectMeta: metav1.ObjectMeta{Name: "look", Namespace: ns, UID: "1234",
		CreationTimestamp: metav1.Now()}, Spec: v1.BrowseSessionSpec{Source: "data", SnapshotID: "k1", RequestedBy: "alice"}}
	relay := func() *corev1.Pod {
		return browse.NewRelayPod(session, "look-relay", browse.ManagerEndpoint{URL: "https://10.0.0.1:443", ServerName: "holdfast.svc", CA: []byte("ca")},
			restore.HelperPod{Image: "holdfast:dev"})
	}
	// The policy is in force once the API server has loaded it.
	if err := testenv.Poll(ctx, 2*time.Minute, func() error {
		p := relay()
		p.Spec.Containers[0].Args = []string{"sh"}
		err := manager.Create(ctx, p, client.DryRunAll)
		if err == nil {
			return fmt.Errorf("the manager could still create a relay pod running a shell")
		}
		if !strings.Contains(err.Error(), "relay pods") {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what   string
		mutate func(*corev1.Pod)
	}{
		{"a relay pod running another command", func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/bin/sh"} }},
		{"a relay pod with the namespace's API token", func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil }},
		{"a relay pod whose token is for the API server", func(p *corev1.Pod) {
			p.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience = ""
		}},
		{"a relay pod that mounts a claim", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}})
		}},
		{"a relay pod whose projected volume adds a Secret", func(p *corev1.Pod) {
			p.Spec.Volumes[0].Projected.Sources = append(p.Spec.Volumes[0].Projected.Sources,
				corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "keys"}}})
		}},
		{"a relay pod on the host's network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{"a privileged relay pod", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
		}},
		{"a relay pod with a second container", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "evil:1", Args: []string{"browse-relay"}})
		}},
	} {
		p := relay()
		c.mutate(p)
		if err := manager.Create(ctx, p, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "relay pods") {
			t.Errorf("the manager creating %s: %v, want a denial", c.what, err)
		}
	}
	// What the manager needs: create the relay pod NewRelayPod builds, and delete it.
	ok := relay()
	if err := manager.Create(ctx, ok); err != nil {
		t.Fatalf("the manager creating relay pod %s: %v", ok.Name, err)
	}
	if err := manager.Delete(ctx, ok, client.Preconditions{UID: &ok.UID}); err != nil {
		t.Errorf("the manager deleting its relay pod: %v", err)
	}
}

// TestABrowseSessionNamesItsCreator: every read through a browse session is recorded
// with spec.requestedBy, so the API server admits a session only with its creator's
// own name there, and the spec cannot change afterwards. Namespace editors may create
// sessions (the ClusterRole aggregated to admin and edit).
func TestABrowseSessionNamesItsCreator(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	if err := e.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-browses", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "holdfast-browse-sessions"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "alice"}}}); err != nil {
		t.Fatal(err)
	}
	alice := as(t, e, rest.ImpersonationConfig{UserName: "alice", Groups: []string{"system:authenticated"}})
	session := func(by string) *v1.BrowseSession {
		return &v1.BrowseSession{ObjectMeta: metav1.ObjectMeta{Name: "look", Namespace: ns},
			Spec: v1.BrowseSessionSpec{Source: "data", RequestedBy: by}}
	}
	if err := testenv.Poll(ctx, 2*time.Minute, func() error {
		err := alice.Create(ctx, session("bob"), client.DryRunAll)
		if err == nil {
			return fmt.Errorf("alice could create a session in bob's name")
		}
		if !strings.Contains(err.Error(), "spec.requestedBy must be the user creating the session, alice, not bob") {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	own := session("alice")
	if err := alice.Create(ctx, own); err != nil {
		t.Fatalf("alice creating a session in her name: %v", err)
	}
	changed := own.DeepCopy()
	changed.Spec.RequestedBy = "bob"
	if err := alice.Update(ctx, changed); err == nil {
		t.Errorf("alice changed the session's requestedBy")
	}
	// Not even a cluster administrator can rewrite who asked.
	if err := e.Client.Update(ctx, changed); err == nil || !strings.Contains(err.Error(), "fixed at creation") {
		t.Errorf("an administrator changing the session's requestedBy: %v, want a rejection", err)
	}
}
