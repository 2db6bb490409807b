package install

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/holdfast-dev/holdfast/internal/hostpath"
)

// hostPathFlags returns the roots a container is given (every --host-path-roots, as
// the binary adds them up) and its --host-filesystem.
func hostPathFlags(t *testing.T, c *corev1.Container) (hostpath.Roots, string) {
	t.Helper()
	var roots hostpath.Roots
	var host string
	for _, arg := range c.Args {
		if v, ok := strings.CutPrefix(arg, "--host-path-roots="); ok {
			if err := roots.Set(v); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
		if v, ok := strings.CutPrefix(arg, "--host-filesystem="); ok {
			host = v
		}
	}
	return roots, host
}

// checkRootsMounted asserts that the agent reaches every root through a read-write
// hostPath mount of exactly that root at <host><root>, which starts the agent on a
// node the provisioner has not used yet (type DirectoryOrCreate), and that nothing
// else of the node but the kubelet's pods directory is mounted under <host>: the
// agent must not see more of the node than that and its roots (on a k3s server
// /var/lib/rancher holds the cluster's datastore).
func checkRootsMounted(t *testing.T, spec *corev1.PodSpec, a *corev1.Container, roots hostpath.Roots, host string) {
	t.Helper()
	mounted := map[string]bool{}
	for _, mt := range a.VolumeMounts {
		rel, ok := strings.CutPrefix(mt.MountPath, host+"/")
		if host == "" || !ok || mt.Name == "kubelet-pods" { // checked by checkKubeletMount
			continue
		}
		rel = "/" + rel
		v := volume(t, spec, mt.Name)
		if !slices.Contains(roots, rel) || v.HostPath == nil || v.HostPath.Path != rel {
			t.Errorf("mount %s at %s of %+v: want only the roots %v, each at %s<root>", mt.Name, mt.MountPath, v.VolumeSource, roots, host)
			continue
		}
		mounted[rel] = true
		if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("volume %s has hostPath type %q: want DirectoryOrCreate, so the agent starts on a node without the root", v.Name, ptr.Deref(v.HostPath.Type, ""))
		}
		if mt.ReadOnly {
			t.Errorf("mount %s is read-only: restores write", mt.Name)
		}
	}
	for _, root := range roots {
		if !mounted[root] {
			t.Errorf("root %s is not mounted at %s%s", root, host, root)
		}
	}
}

// Each local-path component gives the manager and the agent the root of its
// provisioner, and the agent a mount of that root alone.
func TestLocalPathComponents(t *testing.T) {
	for component, root := range map[string]string{
		"local-path-k3s":         "/var/lib/rancher/k3s/storage",
		"local-path-kind":        "/var/local-path-provisioner",
		"local-path-provisioner": "/opt/local-path-provisioner",
	} {
		t.Run(component, func(t *testing.T) {
			b := build(t, overlay(t, []string{"config/default"}, []string{"kustomize/components/" + component}, ""))
			_, m := b.manager()
			ds, a := b.agent()
			managerRoots, _ := hostPathFlags(t, m)
			agentRoots, host := hostPathFlags(t, a)
			want := []string{root}
			if !slices.Equal(managerRoots, want) || !slices.Equal(agentRoots, want) {
				t.Errorf("roots: manager %v, agent %v; want %v for both", managerRoots, agentRoots, want)
			}
			if host != "/host" {
				t.Errorf("--host-filesystem=%q, want /host", host)
			}
			checkRootsMounted(t, &ds.Spec.Template.Spec, a, agentRoots, host)
			checkKubeletMount(t, ds.Spec.Template.Spec, a, "/var/lib/kubelet/pods")
		})
	}

	// The plain install gives none: claims on hostPath volumes are skipped HostPath.
	plain := build(t, "config/default")
	_, pm := plain.manager()
	_, pa := plain.agent()
	for _, c := range []*corev1.Container{pm, pa} {
		if roots, host := hostPathFlags(t, c); len(roots) != 0 || host != "" {
			t.Errorf("config/default %s: --host-path-roots %v, --host-filesystem %q; want none", c.Name, roots, host)
		}
	}
}

// The local test cluster gives the manager and the agent the e2e suite's root, and
// mounts just that directory into the agent under its --host-filesystem, read-write,
// as the local-path components do.
func TestLocalOverlayHostPathRoots(t *testing.T) {
	b := build(t, "kustomize/local")
	_, m := b.manager()
	ds, a := b.agent()
	managerRoots, _ := hostPathFlags(t, m)
	agentRoots, host := hostPathFlags(t, a)
	if want := []string{"/var/lib/holdfast/local-path"}; !slices.Equal(managerRoots, want) || !slices.Equal(agentRoots, want) {
		t.Fatalf("roots: manager %v, agent %v; want %v for both", managerRoots, agentRoots, want)
	}
	mt := mount(t, a, "local-path")
	v := volume(t, &ds.Spec.Template.Spec, "local-path")
	if host != "/host" || mt.MountPath != host+agentRoots[0] || v.HostPath == nil || v.HostPath.Path != agentRoots[0] || mt.ReadOnly {
		t.Errorf("--host-filesystem=%s, mount %+v of %+v: want the root mounted read-write at /host<root>", host, mt, v.VolumeSource)
	}
}
