package install

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

const (
	managerUser = "system:serviceaccount:holdfast-system:holdfast-manager"
	agentUser   = "system:serviceaccount:holdfast-system:holdfast-agent"
	nodeExtra   = "authentication.kubernetes.io/node-name"
)

var installTrustOnce sync.Once

// installTrust applies what decides who may do what: the ServiceAccounts, roles and
// bindings, and the ValidatingAdmissionPolicies of the plain install. Nothing else:
// no manager or agent runs here.
func installTrust(t *testing.T, e *testenv.Env) {
	t.Helper()
	installTrustOnce.Do(func() {
		b := build(t, "config/default")
		for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
			for _, o := range b.ofKind(kind) {
				if err := apply(t.Context(), e.Client, o); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// TestAgentHoldsNoSecret asks the API server, as the agent's ServiceAccount, for what
// a compromised node would want (review H2): no Secret of the operator namespace (the
// repository keys, the store credentials, the webhook's serving key) or elsewhere, no
// change to the spec of work objects. It may only find the manager.
func TestAgentHoldsNoSecret(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	agentGroups := []string{"system:serviceaccounts", "system:serviceaccounts:holdfast-system", "system:authenticated"}
	for _, tc := range []struct {
		attrs authzv1.ResourceAttributes
		allow bool
	}{
		{authzv1.ResourceAttributes{Namespace: "holdfast-system", Verb: "get", Resource: "secrets", Name: "holdfast-webhook-server-cert"}, false},
		{authzv1.ResourceAttributes{Namespace: "holdfast-system", Verb: "get", Resource: "secrets", Name: "repository-key-shop-default-kopia"}, false},
		{authzv1.ResourceAttributes{Namespace: "holdfast-system", Verb: "list", Resource: "secrets"}, false},
		{authzv1.ResourceAttributes{Namespace: "shop", Verb: "get", Resource: "secrets", Name: "db-password"}, false},
		{authzv1.ResourceAttributes{Namespace: "shop", Verb: "update", Group: v1.GroupVersion.Group, Resource: "podvolumebackups", Name: "b"}, false},
		{authzv1.ResourceAttributes{Namespace: "shop", Verb: "create", Group: v1.GroupVersion.Group, Resource: "podvolumerestores"}, false},
		{authzv1.ResourceAttributes{Verb: "get", Group: v1.GroupVersion.Group, Resource: "backupstoragelocations", Name: "default"}, false},
		{authzv1.ResourceAttributes{Namespace: "holdfast-system", Verb: "get", Resource: "services", Name: "holdfast-manager-metrics"}, false},
		{authzv1.ResourceAttributes{Namespace: "holdfast-system", Verb: "get", Resource: "services", Name: "holdfast-webhook-service"}, true},
		{authzv1.ResourceAttributes{Verb: "get", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "holdfast-mutating-webhook-configuration"}, true},
		{authzv1.ResourceAttributes{Namespace: "shop", Verb: "patch", Group: v1.GroupVersion.Group, Resource: "podvolumebackups", Subresource: "status", Name: "b"}, true},
	} {
		a := tc.attrs
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			ResourceAttributes: &a, User: agentUser, Groups: agentGroups}}
		if err := e.Client.Create(t.Context(), sar); err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("%s %s %s/%s %s", a.Verb, strings.Trim(a.Resource+"/"+a.Subresource, "/"), a.Namespace, a.Name, a.Group)
		if sar.Status.Allowed != tc.allow {
			t.Errorf("agent may %s: %v, want %v (%s)", what, sar.Status.Allowed, tc.allow, sar.Status.Reason)
		}
	}
}

// TestOnlyTheManagerWritesWorkObjects: a namespace admin whose RBAC allows everything
// on Holdfast's kinds in their namespace still cannot make or steer a backup, restore
// or repository (review H1), and an agent writes the status of its own node's work
// only (review H2). The checks are the plain install's ValidatingAdmissionPolicy.
func TestOnlyTheManagerWritesWorkObjects(t *testing.T) {
	e := testenv.Require(t, env)
	installTrust(t, e)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	// A namespace admin with every verb on every Holdfast kind of their namespace.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "holdfast-all", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1.GroupVersion.Group}, Resources: []string{"*"}, Verbs: []string{"*"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "holdfast-all", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant"}}}
	for _, o := range []client.Object{role, binding} {
		if err := e.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	tenant := as(t, e, rest.ImpersonationConfig{UserName: "tenant", Groups: []string{"system:authenticated"}})
	manager := as(t, e, rest.ImpersonationConfig{UserName: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}})
	agentOn := func(node string) client.Client {
		cfg := rest.ImpersonationConfig{UserName: agentUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
		if node != "" {
			cfg.Extra = map[string][]string{nodeExtra: {node}}
		}
		return as(t, e, cfg)
	}

	backup := func(name string) *v1.PodVolumeBackup {
		return &v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1.LabelPolicy: "p"}},
			Spec: v1.PodVolumeBackupSpec{Node: "node-1", Pod: v1.PodReference{Name: "p", UID: "u"}, Volume: "data",
				SourcePath: "/pvc/data", StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia}}
	}
	// The policy is in force once the API server has loaded it: wait for its first
	// denial rather than for a time.
	probe := backup("probe")
	if err := testenv.Poll(ctx, 2*time.Minute, func() error {
		err := tenant.Create(ctx, probe.DeepCopy())
		if err == nil {
			_ = e.Client.Delete(ctx, probe)
			return fmt.Errorf("the tenant could still create a PodVolumeBackup")
		}
		if !strings.Contains(err.Error(), "only the Holdfast manager creates") {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	restore := &v1.PodVolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns},
		Spec: v1.PodVolumeRestoreSpec{Node: "node-1", Pod: v1.PodReference{Name: "p", UID: "u"}, Volume: "data",
			VolumeRestore: "vr", SnapshotID: "s", SourceNamespace: "victim", StorageLocation: "default",
			Repository: "default-kopia", Uploader: v1.UploaderKopia}}
	repo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: "default-kopia", Namespace: ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: "default", Uploader: v1.UploaderKopia}}
	for _, o := range []client.Object{restore, repo} {
		err := tenant.Create(ctx, o.DeepCopyObject().(client.Object))
		if err == nil || !strings.Contains(err.Error(), "only the Holdfast manager creates") {
			t.Errorf("tenant creating %T: %v, want a denial", o, err)
		}
	}
	b := backup("b")
	for _, o := range []client.Object{b, restore, repo} {
		if err := manager.Create(ctx, o); err != nil {
			t.Fatalf("the manager creating %T: %v", o, err)
		}
	}

	denied := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a denial saying %q", what, err, want)
		}
	}
	relabeled := b.DeepCopy()
	relabeled.Labels[v1.LabelPolicy] = "another-policy"
	denied("tenant relabeling a backup", tenant.Update(ctx, relabeled), "only the Holdfast manager changes the labels")
	canceled := b.DeepCopy()
	canceled.Spec.Cancel = true
	if err := tenant.Update(ctx, canceled); err != nil {
		t.Errorf("tenant canceling a backup must be allowed: %v", err)
	}
	longer := repo.DeepCopy()
	longer.Spec.MaintenanceInterval = &metav1.Duration{Duration: 10 * time.Minute}
	denied("tenant changing a repository's spec", tenant.Update(ctx, longer), "only the Holdfast manager changes")

	status := func(c client.Client, node string) error {
		pvb := backup("b")
		pvb.Spec.Node = node
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1.GroupVersion.String(), "kind": "PodVolumeBackup",
			"metadata": map[string]any{"name": "b", "namespace": ns},
			"status":   map[string]any{"phase": "Completed", "snapshotID": "forged"},
		}}
		return c.Status().Patch(ctx, u, client.Merge)
	}
	denied("tenant forging a backup's status", status(tenant, "node-1"), "only the Holdfast manager, or the agent of node node-1")
	denied("the agent of node-2 writing node-1's backup", status(agentOn("node-2"), "node-1"), "on node node-2 may not")
	denied("an agent token bound to no node", status(agentOn(""), "node-1"), "only the Holdfast manager, or the agent of node node-1")
	if err := status(agentOn("node-1"), "node-1"); err != nil {
		t.Errorf("the agent of node-1 writing its backup's status: %v", err)
	}
	repoStatus := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1.GroupVersion.String(), "kind": "BackupRepository",
		"metadata": map[string]any{"name": repo.Name, "namespace": ns},
		"status":   map[string]any{"keySecretName": "repository-key-of-someone-else"},
	}}
	// RBAC already refuses it; the policy would too.
	denied("the agent writing a repository's status", agentOn("node-1").Status().Patch(ctx, repoStatus, client.Merge), "is forbidden")
}

// as is a client that acts as the impersonated user.
func as(t *testing.T, e *testenv.Env, who rest.ImpersonationConfig) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = who
	c, err := client.New(cfg, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
