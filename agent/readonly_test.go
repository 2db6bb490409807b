package agent

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
)

// TestReadOnlyReason is the table behind review M9: when a pod mounts a volume
// read-only, a restore must not write it.
func TestReadOnlyReason(t *testing.T) {
	vol := func(src corev1.VolumeSource) corev1.Volume { return corev1.Volume{Name: "data", VolumeSource: src} }
	emptyDir := vol(corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
	mount := func(ro bool) corev1.VolumeMount {
		return corev1.VolumeMount{Name: "data", MountPath: "/d", ReadOnly: ro}
	}
	wait := restorewait.Container("w", "u", []string{"data"}, "", 0, corev1.Container{})
	pv := func(modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{AccessModes: modes}}
	}
	for _, tc := range []struct {
		name     string
		volume   corev1.Volume
		inits    []corev1.Container
		mounts   [][]corev1.VolumeMount
		pv       *corev1.PersistentVolume
		readOnly bool
	}{
		{name: "no container mounts it", volume: emptyDir},
		{name: "mounted read-write", volume: emptyDir, mounts: [][]corev1.VolumeMount{{mount(false)}}},
		{name: "mounted read-only", volume: emptyDir, mounts: [][]corev1.VolumeMount{{mount(true)}}, readOnly: true},
		{name: "read-only in one container, read-write in another", volume: emptyDir, mounts: [][]corev1.VolumeMount{{mount(true)}, {mount(false)}}},
		{name: "read-only, restore-wait read-write", volume: emptyDir, inits: []corev1.Container{wait}, mounts: [][]corev1.VolumeMount{{mount(true)}}, readOnly: true},
		{name: "only restore-wait mounts it", volume: emptyDir, inits: []corev1.Container{wait}},
		{name: "claim readOnly", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c", ReadOnly: true}}), pv: pv(corev1.ReadWriteOnce), readOnly: true},
		{name: "claim", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}), pv: pv(corev1.ReadWriteOnce)},
		{name: "ReadOnlyMany only", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}), pv: pv(corev1.ReadOnlyMany), readOnly: true},
		{name: "ReadOnlyMany and ReadWriteMany", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}), pv: pv(corev1.ReadOnlyMany, corev1.ReadWriteMany)},
		{name: "PV csi readOnly", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}),
			pv: &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{ReadOnly: true}}}}, readOnly: true},
		{name: "PV nfs readOnly", volume: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}),
			pv: &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{ReadOnly: true}}}}, readOnly: true},
		{name: "inline csi readOnly", volume: vol(corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d", ReadOnly: ptr.To(true)}}), readOnly: true},
		{name: "inline nfs readOnly", volume: vol(corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/", ReadOnly: true}}), readOnly: true},
		{name: "inline nfs", volume: vol(corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/"}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{tc.volume}, InitContainers: tc.inits}}
			for i, m := range tc.mounts {
				pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprint("c", i), VolumeMounts: m})
			}
			why := readOnlyReason(pod, "data", tc.pv)
			if (why != "") != tc.readOnly {
				t.Errorf("readOnlyReason = %q, want read-only %v", why, tc.readOnly)
			}
		})
	}
}
