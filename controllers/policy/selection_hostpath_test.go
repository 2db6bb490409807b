package policy

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// TestHostPathClaimsAreSkippedAtSelection is issue 19 item 2: a claim bound to a
// hostPath PersistentVolume (what local-path provisioners make) is skipped as
// HostPath unless its path is strictly under --host-path-roots; then it is backed up
// as any claim, as /pvc/<claim>. A claim not bound yet, or whose PersistentVolume the
// cache does not hold yet, is selected as before.
func TestHostPathClaimsAreSkippedAtSelection(t *testing.T) {
	const root = "/var/lib/rancher/k3s/storage"
	hostPathPV := func(name, path string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}}
	}
	pvs := []*corev1.PersistentVolume{
		hostPathPV("pv-under", root+"/pvc-1_shop_under"),
		hostPathPV("pv-outside", "/srv/data"),
		hostPathPV("pv-root", root),
		hostPathPV("pv-dotdot", root+"/../../../../etc"),
		hostPathPV("pv-sibling", root+"-old/pvc-2"),
		{ObjectMeta: metav1.ObjectMeta{Name: "pv-local"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/disk"}}}},
	}
	claims := map[string]string{ // claim -> PersistentVolume ("" unbound)
		"under": "pv-under", "outside": "pv-outside", "root": "pv-root", "dotdot": "pv-dotdot",
		"sibling": "pv-sibling", "local": "pv-local", "unbound": "", "uncached": "pv-not-in-cache",
	}
	for _, tc := range []struct {
		name     string
		roots    hostpath.Roots
		selected []string // claims, sorted
	}{
		{name: "no roots (the plain install)", selected: []string{"local", "unbound", "uncached"}},
		{name: "k3s root allowed", roots: hostpath.Roots{root, "/opt/local-path-provisioner"}, selected: []string{"local", "unbound", "uncached", "under"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "shop"},
				Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
			var pvcs []*corev1.PersistentVolumeClaim
			for claim, pv := range claims {
				pvcs = append(pvcs, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: "shop"},
					Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pv}})
				pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: claim, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
			}
			snap := newSnapshot([]*corev1.Namespace{ns}, []*corev1.Pod{pod}, pvcs, nil, nil)
			snap.setVolumes(pvs, tc.roots)
			sel := selectVolumes(compileSelector(t, `pvc != null`), snap, v1.ClaimsWithoutPodsSkip)

			var got []string
			for _, tgt := range sel.targets {
				got = append(got, tgt.claim)
				if tgt.sourcePath != "/pvc/"+tgt.claim {
					t.Errorf("claim %s: source path %q, want /pvc/%s", tgt.claim, tgt.sourcePath, tgt.claim)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.selected) {
				t.Errorf("selected %v, want %v", got, tc.selected)
			}
			var wantSkipped []string
			for claim := range claims {
				if !slices.Contains(tc.selected, claim) {
					wantSkipped = append(wantSkipped, "shop/app/"+claim)
				}
			}
			slices.Sort(wantSkipped)
			skipped := slices.Sorted(slices.Values(sel.skipped[SkipHostPath]))
			if !slices.Equal(skipped, wantSkipped) || len(sel.skipped) != 1 {
				t.Errorf("skipped %v, want HostPath %v only", sel.skipped, wantSkipped)
			}
			if len(sel.hostPathClaims) != len(wantSkipped) || (len(wantSkipped) > 0 && !slices.ContainsFunc(sel.hostPathClaims, func(s string) bool {
				return s == "shop/outside (PersistentVolume pv-outside)"
			})) {
				t.Errorf("hostPathClaims %v, want one per skipped claim, naming its PersistentVolume", sel.hostPathClaims)
			}
		})
	}
}

func compileSelector(t *testing.T, volumes string) *celpolicy.Selector {
	t.Helper()
	engine, err := celpolicy.NewEngine()
	if err != nil {
		t.Fatal(err)
	}
	sel, err := engine.Compile(v1.VolumeSelector{Volumes: volumes})
	if err != nil {
		t.Fatal(err)
	}
	return sel
}
