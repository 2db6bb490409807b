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
// hostPath mount under its --host-filesystem that propagates later mounts, of a
// directory that must exist (type Directory): nothing is created on a node, and a
// node without a root still runs the agent.
func checkRootsMounted(t *testing.T, spec *corev1.PodSpec, a *corev1.Container, roots hostpath.Roots, host string) {
	t.Helper()
	for _, root := range roots {
		found := false
		for _, mt := range a.VolumeMounts {
			rel, ok := strings.CutPrefix(mt.MountPath, host)
			if host == "" || !ok || !strings.HasPrefix(root+"/", rel+"/") {
				continue
			}
			v := volume(t, spec, mt.Name)
			if v.HostPath == nil || v.HostPath.Path != rel {
				t.Errorf("mount %s at %s: volume %+v, want hostPath %s", mt.Name, mt.MountPath, v.VolumeSource, rel)
				continue
			}
			found = true
			if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
				t.Errorf("volume %s has hostPath type %q: want Directory, which creates nothing on the node", v.Name, ptr.Deref(v.HostPath.Type, ""))
			}
			if mt.ReadOnly {
				t.Errorf("mount %s is read-only: restores write", mt.Name)
			}
			if mt.MountPropagation == nil || *mt.MountPropagation != corev1.MountPropagationHostToContainer {
				t.Errorf("mount %s propagation %v, want HostToContainer", mt.Name, mt.MountPropagation)
			}
		}
		if !found {
			t.Errorf("root %s is under no hostPath mount in %s", root, host)
		}
	}
}

// The local-path component gives the manager and the agent the roots of k3s, kind and
// rancher's local-path-provisioner, and the agent a way to them on every node.
func TestLocalPathComponent(t *testing.T) {
	b := build(t, overlay(t, []string{"config/default"}, []string{"kustomize/components/local-path"}, ""))
	_, m := b.manager()
	ds, a := b.agent()
	managerRoots, _ := hostPathFlags(t, m)
	agentRoots, host := hostPathFlags(t, a)
	want := []string{"/var/lib/rancher/k3s/storage", "/var/local-path-provisioner", "/opt/local-path-provisioner"}
	if !slices.Equal(managerRoots, want) || !slices.Equal(agentRoots, want) {
		t.Errorf("roots: manager %v, agent %v; want %v for both", managerRoots, agentRoots, want)
	}
	if host != "/host" {
		t.Errorf("--host-filesystem=%q, want /host", host)
	}
	checkRootsMounted(t, &ds.Spec.Template.Spec, a, agentRoots, host)
	checkKubeletMount(t, ds.Spec.Template.Spec, a, "/var/lib/kubelet/pods")

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
// mounts just that directory into the agent under its --host-filesystem, read-write:
// the test cluster's "/" is not a shared mount, which the component's HostToContainer
// mount of /var needs.
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
