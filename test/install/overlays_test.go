package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/holdfast-dev/holdfast/internal/webhookcert"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

const ns = "holdfast-system"

// The plain install: everything in holdfast-system, both workloads wired as the
// binary expects, least privilege where the platform allows it.
func TestDefaultInstall(t *testing.T) {
	b := build(t, "config/default")

	if got := b.find("Namespace", ns).GetLabels()["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace Pod Security enforce level = %q; the agent's hostPath mount needs privileged", got)
	}
	if n := len(b.ofKind("CustomResourceDefinition")); n != 8 {
		t.Errorf("%d CRDs, want the 8 Holdfast kinds", n)
	}
	for _, o := range b.objs {
		if o.GetLabels()["app.kubernetes.io/part-of"] != "holdfast" {
			t.Errorf("%s %s lacks app.kubernetes.io/part-of=holdfast", o.GetKind(), o.GetName())
		}
		switch o.GetKind() {
		case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
			"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
		default:
			if o.GetNamespace() != ns {
				t.Errorf("%s %s is in namespace %q, want %s", o.GetKind(), o.GetName(), o.GetNamespace(), ns)
			}
		}
	}

	// The manager.
	d, m := b.manager()
	if m.Image != "holdfast:dev" {
		t.Errorf("manager image = %s", m.Image)
	}
	if len(m.Args) < 2 || m.Args[0] != "manager" || !slices.Contains(m.Args, "--leader-elect") {
		t.Errorf("manager args = %v, want manager --leader-elect ...", m.Args)
	}
	if got := envFrom(t, m, "POD_NAMESPACE"); got != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE from %s", got)
	}
	if got := envValue(t, m, "HOLDFAST_IMAGE"); got != m.Image {
		t.Errorf("the restore-wait image HOLDFAST_IMAGE = %s, the manager runs %s", got, m.Image)
	}
	ports := map[string]int32{}
	for _, p := range m.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["webhook"] != 9443 || ports["metrics"] != 8080 || ports["health"] != 8081 {
		t.Errorf("manager ports = %v, want webhook 9443, metrics 8080, health 8081 (the binary's defaults)", ports)
	}
	if m.LivenessProbe == nil || m.LivenessProbe.HTTPGet.Path != "/healthz" || m.ReadinessProbe == nil || m.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("manager probes are not /healthz and /readyz")
	}
	if m.Resources.Requests.Cpu().IsZero() || m.Resources.Requests.Memory().IsZero() {
		t.Error("manager has no resource requests")
	}
	psc, sc := d.Spec.Template.Spec.SecurityContext, m.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("manager pod is not runAsNonRoot")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("manager container security context = %+v, want read-only root, no escalation, drop ALL", sc)
	}
	if v := volume(t, &d.Spec.Template.Spec, "tmp"); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Error("manager /tmp is not a memory-backed emptyDir")
	}
	certDir := mount(t, m, "webhook-certs").MountPath
	if !slices.Contains(m.Args, "--webhook-cert-dir="+certDir) {
		t.Errorf("manager args %v do not point --webhook-cert-dir at the mounted %s", m.Args, certDir)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "holdfast-manager" {
		t.Errorf("manager service account = %s", d.Spec.Template.Spec.ServiceAccountName)
	}

	// The agent.
	ds, a := b.agent()
	if a.Image != "holdfast:dev" || len(a.Args) == 0 || a.Args[0] != "agent" {
		t.Errorf("agent image %s args %v", a.Image, a.Args)
	}
	if got := envFrom(t, a, "NODE_NAME"); got != "spec.nodeName" {
		t.Errorf("NODE_NAME from %s, want spec.nodeName", got)
	}
	checkKubeletMount(t, ds.Spec.Template.Spec, a, "/var/lib/kubelet/pods")
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("agent tolerations %v do not tolerate every taint", ds.Spec.Template.Spec.Tolerations)
	}
	if sel := ds.Spec.Template.Spec.NodeSelector; len(sel) != 1 || sel["kubernetes.io/os"] != "linux" {
		t.Errorf("agent node selector = %v, want only kubernetes.io/os=linux (every Linux node)", sel)
	}
	if a.SecurityContext == nil || a.SecurityContext.Privileged == nil || *a.SecurityContext.Privileged {
		t.Error("the default agent must not be privileged")
	}
	if caps := a.SecurityContext.Capabilities; caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) || !slices.Contains(caps.Add, "DAC_READ_SEARCH") {
		t.Errorf("agent capabilities = %+v, want drop ALL, add only the file ones", caps)
	}
	workDir := mount(t, a, "work").MountPath
	if !slices.Contains(a.Args, "--work-dir="+workDir) {
		t.Errorf("agent args %v do not point --work-dir at the mounted %s", a.Args, workDir)
	}
	if v := volume(t, &ds.Spec.Template.Spec, "work"); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Error("the agent's work directory is not a memory-backed emptyDir")
	}
	if ds.Spec.Template.Spec.ServiceAccountName != "holdfast-agent" {
		t.Errorf("agent service account = %s", ds.Spec.Template.Spec.ServiceAccountName)
	}

	// Services.
	svc := into[corev1.Service](t, b.find("Service", webhookcert.DefaultServiceName))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "webhook" {
		t.Errorf("webhook Service ports = %+v, want 443 -> webhook (9443)", svc.Spec.Ports)
	}
	if !matches(svc.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("the webhook Service does not select the manager pods")
	}
	metrics := into[corev1.Service](t, b.find("Service", "holdfast-manager-metrics"))
	if p := metrics.Spec.Ports[0]; p.Port != 8080 || p.TargetPort.StrVal != "metrics" || p.AppProtocol == nil || *p.AppProtocol != "https" ||
		!matches(metrics.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("metrics Service = %+v, want 8080 -> metrics, appProtocol https", metrics.Spec)
	}
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// checkKubeletMount asserts the agent sees the kubelet's pods directory of the host at
// hostPath under its --kubelet-root, with mounts made later propagated into it.
func checkKubeletMount(t *testing.T, spec corev1.PodSpec, a *corev1.Container, hostPath string) {
	t.Helper()
	v := volume(t, &spec, "kubelet-pods")
	if v.HostPath == nil || v.HostPath.Path != hostPath {
		t.Errorf("kubelet-pods volume = %+v, want hostPath %s", v.VolumeSource, hostPath)
	}
	mt := mount(t, a, "kubelet-pods")
	if mt.MountPropagation == nil || *mt.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("kubelet-pods mount propagation = %v, want HostToContainer", mt.MountPropagation)
	}
	if mt.ReadOnly {
		t.Error("kubelet-pods is mounted read-only: restores write into it")
	}
	var root string
	for _, arg := range a.Args {
		if v, ok := strings.CutPrefix(arg, "--kubelet-root="); ok {
			root = v
		}
	}
	if root == "" || filepath.Join(root, "pods") != mt.MountPath {
		t.Errorf("--kubelet-root=%s, but the pods directory is mounted at %s", root, mt.MountPath)
	}
}

// The generated roles are bound to the right service accounts, and the agent can
// never read Secrets outside the operator namespace.
func TestRBAC(t *testing.T) {
	b := build(t, "config/default")
	bound := map[string][]string{} // "<kind>/<name>" -> service accounts
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range b.ofKind(kind) {
			rb := into[rbacv1.RoleBinding](t, o)
			if rb.RoleRef.Name == "cluster-admin" || rb.RoleRef.Name == "admin" || rb.RoleRef.Name == "edit" {
				t.Errorf("%s %s grants %s", kind, rb.Name, rb.RoleRef.Name)
			}
			for _, s := range rb.Subjects {
				if s.Kind != "ServiceAccount" || s.Namespace != ns {
					t.Errorf("%s %s binds %s %s/%s", kind, rb.Name, s.Kind, s.Namespace, s.Name)
				}
				bound[rb.RoleRef.Kind+"/"+rb.RoleRef.Name] = append(bound[rb.RoleRef.Kind+"/"+rb.RoleRef.Name], s.Name)
			}
		}
	}
	for ref, sas := range map[string][]string{
		"ClusterRole/holdfast-manager":      {"holdfast-manager"},
		"Role/holdfast-manager":             {"holdfast-manager"},
		"ClusterRole/holdfast-agent":        {"holdfast-agent"},
		"Role/holdfast-agent":               {"holdfast-agent"},
		"ClusterRole/holdfast-webhook-cert": {"holdfast-manager"},
		"Role/holdfast-webhook-cert":        {"holdfast-manager"},
		"ClusterRole/holdfast-metrics-auth": {"holdfast-manager", "holdfast-agent"},
		// Bound by the user, to the ServiceAccount their Prometheus scrapes with.
		"ClusterRole/holdfast-metrics-reader": nil,
	} {
		got := slices.Sorted(slices.Values(bound[ref]))
		if want := slices.Sorted(slices.Values(sas)); !slices.Equal(got, want) {
			t.Errorf("%s is bound to %q, want service accounts %q", ref, got, want)
		}
	}
	// The metrics endpoints' grants: ask the API server about a scrape's token, and
	// read /metrics; nothing more.
	for name, want := range map[string][]rbacv1.PolicyRule{
		"holdfast-metrics-auth": {
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
		},
		"holdfast-metrics-reader": {{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	} {
		if got := into[rbacv1.ClusterRole](t, b.find("ClusterRole", name)).Rules; !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("ClusterRole %s rules = %+v, want %+v", name, got, want)
		}
	}
	agent := into[rbacv1.ClusterRole](t, b.find("ClusterRole", "holdfast-agent"))
	for _, r := range agent.Rules {
		if slices.Contains(r.APIGroups, "") && (slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, "*")) {
			t.Errorf("the agent's ClusterRole grants %v on Secrets in every namespace; it may read them only in %s", r.Verbs, ns)
		}
	}
	// The rotator's grants name exactly the objects it manages.
	names := map[string]bool{}
	for _, kind := range []string{"ClusterRole", "Role"} {
		role := into[rbacv1.ClusterRole](t, b.find(kind, "holdfast-webhook-cert"))
		for _, r := range role.Rules {
			for _, n := range r.ResourceNames {
				names[n] = true
			}
		}
	}
	for _, n := range []string{webhookcert.DefaultSecretName, webhookcert.DefaultValidatingWebhookConfiguration, webhookcert.DefaultMutatingWebhookConfiguration} {
		if !names[n] {
			t.Errorf("the webhook-cert roles do not grant access to %s, which the manager manages", n)
		}
	}
}

// The webhook configurations controller-gen writes end up with the names the manager
// patches and point at the webhook Service in holdfast-system. Until the controllers
// declare webhooks, a configuration in controller-gen's shape stands in.
func TestWebhookWiring(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(testenv.RepoRoot(), "config", "webhook")
	kustomization, err := os.ReadFile(filepath.Join(src, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	service, err := os.ReadFile(filepath.Join(src, "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifests, err := os.ReadFile(filepath.Join(src, "manifests.yaml"))
	switch {
	case err == nil:
		if !strings.Contains(string(kustomization), "- manifests.yaml") {
			t.Error("controller-gen wrote config/webhook/manifests.yaml but config/webhook/kustomization.yaml does not list it: the webhooks are not installed")
		}
	case os.IsNotExist(err):
		manifests = []byte(controllerGenWebhooks)
	default:
		t.Fatal(err)
	}
	if !strings.Contains(string(kustomization), "- manifests.yaml") {
		kustomization = append(kustomization, []byte("- manifests.yaml\n")...)
	}
	for name, data := range map[string][]byte{"kustomization.yaml": kustomization, "service.yaml": service, "manifests.yaml": manifests} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wrapped := t.TempDir()
	if err := os.WriteFile(filepath.Join(wrapped, "kustomization.yaml"), []byte("namespace: "+ns+"\nresources:\n- "+mustRel(t, wrapped, dir)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := build(t, wrapped)
	b.find("Service", webhookcert.DefaultServiceName)
	for kind, name := range map[string]string{
		"ValidatingWebhookConfiguration": webhookcert.DefaultValidatingWebhookConfiguration,
		"MutatingWebhookConfiguration":   webhookcert.DefaultMutatingWebhookConfiguration,
	} {
		if o := b.lookup(kind, name); o == nil {
			if len(b.ofKind(kind)) > 0 {
				t.Errorf("the %s is named %s; the manager patches %s", kind, b.ofKind(kind)[0].GetName(), name)
			}
			continue
		}
		webhooks, _, _ := unstructured.NestedSlice(b.find(kind, name).Object, "webhooks")
		for _, w := range webhooks {
			svc, _, _ := unstructured.NestedStringMap(w.(map[string]any), "clientConfig", "service")
			if svc["name"] != webhookcert.DefaultServiceName || svc["namespace"] != ns {
				t.Errorf("%s webhook calls service %s/%s, want %s/%s", kind, svc["namespace"], svc["name"], ns, webhookcert.DefaultServiceName)
			}
		}
	}
}

// controllerGenWebhooks is what controller-gen's webhook generator writes.
const controllerGenWebhooks = `---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service:
      name: webhook-service
      namespace: system
      path: /mutate-v1-pod
  failurePolicy: Ignore
  name: restore-wait.backup.holdfast.dev
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
  sideEffects: None
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service:
      name: webhook-service
      namespace: system
      path: /validate-backup-holdfast-dev-v1alpha1-volumebackuppolicy
  failurePolicy: Fail
  name: vvolumebackuppolicy.backup.holdfast.dev
  rules:
  - apiGroups: [backup.holdfast.dev]
    apiVersions: [v1alpha1]
    operations: [CREATE, UPDATE]
    resources: [volumebackuppolicies]
  sideEffects: None
`

func mustRel(t *testing.T, from, to string) string {
	t.Helper()
	r, err := filepath.Rel(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// OpenShift: privileged agent allowed by an SCC that only the agent may use, the
// namespace's empty node selector, and a manager whose UID the SCC picks.
func TestOpenShiftOverlay(t *testing.T) {
	b := build(t, "kustomize/openshift")
	ds, a := b.agent()
	checkPrivileged(t, a)
	checkKubeletMount(t, ds.Spec.Template.Spec, a, "/var/lib/kubelet/pods")

	if v, ok := b.find("Namespace", ns).GetAnnotations()["openshift.io/node-selector"]; !ok || v != "" {
		t.Errorf(`namespace annotation openshift.io/node-selector = %q (present %v), want ""`, v, ok)
	}
	scc := b.find("SecurityContextConstraints", "holdfast-agent")
	for _, field := range []string{"allowPrivilegedContainer", "allowHostDirVolumePlugin"} {
		if v, _, _ := unstructured.NestedBool(scc.Object, field); !v {
			t.Errorf("SCC %s is not true", field)
		}
	}
	for _, field := range []string{"allowHostNetwork", "allowHostPID", "allowHostIPC", "allowHostPorts"} {
		if v, _, _ := unstructured.NestedBool(scc.Object, field); v {
			t.Errorf("SCC %s is true; the agent needs none of the host's namespaces", field)
		}
	}
	if vols, _, _ := unstructured.NestedStringSlice(scc.Object, "volumes"); !slices.Contains(vols, "hostPath") || slices.Contains(vols, "*") {
		t.Errorf("SCC volumes = %v, want an explicit list with hostPath", vols)
	}
	role := into[rbacv1.ClusterRole](t, b.find("ClusterRole", "holdfast-agent-scc"))
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Verbs, []string{"use"}) || !slices.Equal(role.Rules[0].ResourceNames, []string{"holdfast-agent"}) {
		t.Errorf("holdfast-agent-scc rules = %+v, want use of SCC holdfast-agent only", role.Rules)
	}
	binding := into[rbacv1.ClusterRoleBinding](t, b.find("ClusterRoleBinding", "holdfast-agent-scc"))
	if binding.RoleRef.Name != "holdfast-agent-scc" || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Name != ds.Spec.Template.Spec.ServiceAccountName || binding.Subjects[0].Namespace != ns {
		t.Errorf("holdfast-agent-scc binding = %+v, want the agent's service account", binding)
	}

	d, _ := b.manager()
	psc := d.Spec.Template.Spec.SecurityContext
	if psc.RunAsUser != nil || psc.RunAsGroup != nil {
		t.Error("the manager fixes its UID; restricted-v2 refuses UIDs outside the namespace range")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the manager must stay runAsNonRoot")
	}
}

func checkPrivileged(t *testing.T, a *corev1.Container) {
	t.Helper()
	sc := a.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Fatal("the agent is not privileged")
	}
	// The API server refuses privileged with allowPrivilegeEscalation: false.
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		t.Error("privileged agent with allowPrivilegeEscalation: false is invalid")
	}
}

// TKGI keeps the kubelet's pods under /var/vcap/data/kubelet and needs privileged.
func TestTKGIOverlay(t *testing.T) {
	b := build(t, "kustomize/tkgi")
	ds, a := b.agent()
	checkKubeletMount(t, ds.Spec.Template.Spec, a, "/var/vcap/data/kubelet/pods")
	checkPrivileged(t, a)
}

// RancherOS (RKE) keeps them under /opt/rke/var/lib/kubelet; root with file
// capabilities is enough there.
func TestRancherOSOverlay(t *testing.T) {
	b := build(t, "kustomize/rancheros")
	ds, a := b.agent()
	checkKubeletMount(t, ds.Spec.Template.Spec, a, "/opt/rke/var/lib/kubelet/pods")
	if *a.SecurityContext.Privileged {
		t.Error("the RancherOS agent need not be privileged")
	}
}

// The local test cluster overlay differs from config/default only by images that are
// never pulled and a filesystem storage location on a host directory. The manager keeps
// its non-root user: the repositories in that directory are shared with its group.
func TestLocalOverlay(t *testing.T) {
	local, plain := build(t, "kustomize/local"), build(t, "config/default")

	bsl := local.find("BackupStorageLocation", "default")
	path, _, _ := unstructured.NestedString(bsl.Object, "spec", "filesystem", "path")
	d, m := local.manager()
	ds, a := local.agent()
	for _, pod := range []struct {
		spec *corev1.PodSpec
		c    *corev1.Container
	}{{&d.Spec.Template.Spec, m}, {&ds.Spec.Template.Spec, a}} {
		if pod.c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("%s imagePullPolicy = %q, want Never", pod.c.Name, pod.c.ImagePullPolicy)
		}
		if mt := mount(t, pod.c, "backups"); mt.MountPath != path {
			t.Errorf("%s mounts the backups at %s, the storage location says %s", pod.c.Name, mt.MountPath, path)
		}
		if v := volume(t, pod.spec, "backups"); v.HostPath == nil {
			t.Errorf("%s backups volume is not a hostPath", pod.c.Name)
		}
	}

	// Undo exactly those changes and the e2e suite's local-path root
	// (localpath_test.go): what is left must equal config/default.
	pd, _ := plain.manager()
	added := func(name string) bool { return name == "backups" || name == "local-path" }
	strip := func(spec *corev1.PodSpec, c *corev1.Container) {
		c.ImagePullPolicy = ""
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return added(m.Name) })
		spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return added(v.Name) })
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool {
			return strings.HasPrefix(a, "--host-path-roots=") || strings.HasPrefix(a, "--host-filesystem=")
		})
	}
	strip(&d.Spec.Template.Spec, m)
	strip(&ds.Spec.Template.Spec, a)
	pds, _ := plain.agent()
	if !equality.Semantic.DeepEqual(d, pd) {
		t.Error("the local manager Deployment differs from config/default beyond pull policy, the backups mount and the local-path roots")
	}
	if !equality.Semantic.DeepEqual(ds, pds) {
		t.Error("the local agent DaemonSet differs from config/default beyond pull policy, the backups mount and the local-path roots")
	}
	if len(local.objs) != len(plain.objs)+1 {
		t.Errorf("local has %d objects, config/default %d: only the storage location should be added", len(local.objs), len(plain.objs))
	}
	for _, o := range plain.objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			continue
		}
		if lo := local.lookup(o.GetKind(), o.GetName()); lo == nil || !equality.Semantic.DeepEqual(lo.Object, o.Object) {
			t.Errorf("%s %s differs in the local overlay", o.GetKind(), o.GetName())
		}
	}
}

// Users change the image with their own kustomization's images entry; both workloads
// follow.
func TestImageOverride(t *testing.T) {
	dir := overlay(t, []string{"config/default"}, nil, "images:\n- name: holdfast\n  newName: holdfast-mirror/holdfast\n  newTag: v1.2.3\n")
	b := build(t, dir)
	_, m := b.manager()
	_, a := b.agent()
	for _, c := range []*corev1.Container{m, a} {
		if c.Image != "holdfast-mirror/holdfast:v1.2.3" {
			t.Errorf("%s image = %s after the images override", c.Name, c.Image)
		}
	}
	if got := envValue(t, m, "HOLDFAST_IMAGE"); got != m.Image {
		t.Errorf("the restore-wait image HOLDFAST_IMAGE = %s, the manager runs %s", got, m.Image)
	}
}

// The cert-manager component: the manager stops managing its certificate, serves
// cert-manager's, and loses the grants it only needed for that.
func TestCertManagerComponent(t *testing.T) {
	b := build(t, overlay(t, []string{"config/default"}, []string{"config/certmanager"}, ""))
	d, m := b.manager()
	if m.Args[len(m.Args)-1] != "--webhook-cert-mode="+webhookcert.ModeExternal {
		t.Errorf("manager args = %v, want --webhook-cert-mode=external last", m.Args)
	}
	v := volume(t, &d.Spec.Template.Spec, "webhook-certs")
	if v.Secret == nil || v.EmptyDir != nil {
		t.Fatalf("webhook-certs volume = %+v, want only cert-manager's Secret", v.VolumeSource)
	}
	cert := b.find("Certificate", "holdfast-webhook-serving-cert")
	if secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); secret != v.Secret.SecretName {
		t.Errorf("the Certificate writes Secret %s, the manager mounts %s", secret, v.Secret.SecretName)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if want := webhookcert.DefaultServiceName + "." + ns + ".svc"; !slices.Contains(dnsNames, want) {
		t.Errorf("Certificate dnsNames %v lack %s", dnsNames, want)
	}
	webhookConfigs := append(b.ofKind("ValidatingWebhookConfiguration"), b.ofKind("MutatingWebhookConfiguration")...)
	if len(webhookConfigs) == 0 {
		t.Error("no webhook configuration in the build")
	}
	for _, o := range webhookConfigs {
		if got := o.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != ns+"/holdfast-webhook-ca" {
			t.Errorf("%s %s: cert-manager.io/inject-ca-from = %q", o.GetKind(), o.GetName(), got)
		}
	}
	for _, kind := range []string{"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} {
		if b.lookup(kind, "holdfast-webhook-cert") != nil {
			t.Errorf("%s holdfast-webhook-cert is still installed with cert-manager", kind)
		}
	}
	// A platform overlay composes with it.
	b = build(t, overlay(t, []string{"kustomize/openshift"}, []string{"config/certmanager"}, ""))
	_, a := b.agent()
	checkPrivileged(t, a)
	b.find("Certificate", "holdfast-webhook-serving-cert")
}

// The documented Azure Files patch adds nouser_xattr to a StorageClass as AKS writes
// them, keeping its other mount options.
func TestAzureFilesPatch(t *testing.T) {
	dir := t.TempDir()
	patch, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "kustomize", "azure-files", "nouser_xattr_patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"storageclass.yaml": `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: azurefile-csi
provisioner: file.csi.azure.com
parameters:
  skuName: Standard_LRS
mountOptions:
- dir_mode=0777
- file_mode=0777
- mfsymlinks
`,
		"nouser_xattr_patch.yaml": string(patch),
		"kustomization.yaml": `resources:
- storageclass.yaml
patches:
- path: nouser_xattr_patch.yaml
  target:
    kind: StorageClass
    name: azurefile-csi
`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sc := build(t, dir).find("StorageClass", "azurefile-csi")
	opts, _, _ := unstructured.NestedStringSlice(sc.Object, "mountOptions")
	if !slices.Equal(opts, []string{"dir_mode=0777", "file_mode=0777", "mfsymlinks", "nouser_xattr"}) {
		t.Errorf("mountOptions = %v, want the original ones and nouser_xattr", opts)
	}
}
