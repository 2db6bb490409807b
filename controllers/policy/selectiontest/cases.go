// Package selectiontest holds the selection cases that the policy controller's tests
// and kubectl holdfast preview's tests both run, so that a run and a preview are held
// to the same answers: for each case, a cluster, a selector and what a run does with
// every volume the selector picks.
package selectiontest

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Case is one selection: the objects of the cluster, the policy's selector and
// claimsWithoutPods, and the volumes it picks.
type Case struct {
	Name              string
	Selector          v1.VolumeSelector
	ClaimsWithoutPods v1.ClaimsWithoutPods
	Namespaces        []*corev1.Namespace
	Pods              []*corev1.Pod
	Claims            []*corev1.PersistentVolumeClaim
	// Nodes are the nodes' metadata (their kubernetes.io/os label).
	Nodes []*metav1.PartialObjectMetadata
	// Want maps every volume the selector picks, as <namespace>/<pod>/<volume> or
	// <namespace>/<claim> for a claim no pod uses, to the reason a run skips it, ""
	// when a run backs it up. Volumes not picked are absent.
	Want map[string]string
}

// Cases returns the cases with fresh objects: callers may index them freely.
func Cases() []Case {
	return []Case{
		{
			Name:       "every kind of volume",
			Selector:   v1.VolumeSelector{Volumes: "true"},
			Namespaces: []*corev1.Namespace{namespace("shop", nil)},
			Pods: []*corev1.Pod{pod("shop", "web", "node-a", corev1.PodRunning,
				emptyDir("cache"), claimVolume("data", "web-data"), claimVolume("gone", "missing"), claimVolume("raw", "block"),
				volume("conf", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}),
				volume("creds", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}),
				volume("info", corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}),
				volume("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}),
				volume("token", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}),
			)},
			Claims: []*corev1.PersistentVolumeClaim{claim("shop", "web-data", false), claim("shop", "block", true)},
			Want: map[string]string{
				"shop/web/cache": "", "shop/web/data": "", "shop/web/gone": "ClaimNotFound", "shop/web/raw": "BlockMode",
				"shop/web/conf": "ConfigMap", "shop/web/creds": "Secret", "shop/web/info": "DownwardAPI",
				"shop/web/host": "HostPath", "shop/web/token": "ServiceAccountToken",
			},
		},
		{
			Name:       "pods that cannot be backed up now",
			Selector:   v1.VolumeSelector{Volumes: "has(volume.emptyDir)"},
			Namespaces: []*corev1.Namespace{namespace("shop", nil)},
			Pods: []*corev1.Pod{
				pod("shop", "pending", "node-a", corev1.PodPending, emptyDir("cache")),
				pod("shop", "unscheduled", "", corev1.PodPending, emptyDir("cache")),
				pod("shop", "windows", "node-w", corev1.PodRunning, emptyDir("cache")),
				pod("shop", "done", "node-a", corev1.PodSucceeded, emptyDir("cache")),
			},
			Nodes: []*metav1.PartialObjectMetadata{{ObjectMeta: metav1.ObjectMeta{Name: "node-w", Labels: map[string]string{"kubernetes.io/os": "windows"}}}},
			Want: map[string]string{
				"shop/pending/cache": "PodNotRunning", "shop/unscheduled/cache": "NoNode", "shop/windows/cache": "Windows",
			},
		},
		{
			Name: "a namespace selector",
			Selector: v1.VolumeSelector{Namespaces: `namespace.metadata.labels[?"backup"].orValue("") == "gold"`,
				Volumes: "pvc != null"},
			Namespaces: []*corev1.Namespace{namespace("gold", map[string]string{"backup": "gold"}), namespace("bronze", nil)},
			Pods: []*corev1.Pod{pod("gold", "db", "node-a", corev1.PodRunning, claimVolume("data", "db-data"), emptyDir("tmp")),
				pod("bronze", "db", "node-a", corev1.PodRunning, claimVolume("data", "db-data"))},
			Claims: []*corev1.PersistentVolumeClaim{claim("gold", "db-data", false), claim("bronze", "db-data", false)},
			Want:   map[string]string{"gold/db/data": ""},
		},
		{
			Name:              "claims no pod uses, skipped",
			Selector:          v1.VolumeSelector{Volumes: "pvc != null"},
			ClaimsWithoutPods: v1.ClaimsWithoutPodsSkip,
			Namespaces:        []*corev1.Namespace{namespace("shop", nil)},
			Claims:            []*corev1.PersistentVolumeClaim{claim("shop", "archive", false)},
			Want:              map[string]string{"shop/archive": "NotMounted"},
		},
		{
			Name:              "claims no pod uses, backed up",
			Selector:          v1.VolumeSelector{Volumes: "pvc != null"},
			ClaimsWithoutPods: v1.ClaimsWithoutPodsBackup,
			Namespaces:        []*corev1.Namespace{namespace("shop", nil)},
			Claims:            []*corev1.PersistentVolumeClaim{claim("shop", "archive", false)},
			Want:              map[string]string{"shop/archive": ""},
		},
		{
			Name: "a selector that fails on some pods",
			// Reads a label without has() or ?: a pod without it fails.
			Selector:   v1.VolumeSelector{Volumes: `pod.metadata.labels["tier"] == "db"`},
			Namespaces: []*corev1.Namespace{namespace("shop", nil)},
			Pods: []*corev1.Pod{labelled(pod("shop", "db", "node-a", corev1.PodRunning, emptyDir("v")), "tier", "db"),
				labelled(pod("shop", "web", "node-a", corev1.PodRunning, emptyDir("v")), "tier", "web"),
				pod("shop", "bare", "node-a", corev1.PodRunning, emptyDir("v"))},
			Want: map[string]string{"shop/db/v": "", "shop/bare/v": "SelectorError"},
		},
	}
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pod(ns, name, node string, phase corev1.PodPhase, vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: k8stypes.UID("uid-" + ns + "-" + name)},
		Spec:   corev1.PodSpec{NodeName: node, Volumes: vols, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{Phase: phase}}
}

func labelled(p *corev1.Pod, key, value string) *corev1.Pod {
	p.Labels = map[string]string{key: value}
	return p
}

func volume(name string, src corev1.VolumeSource) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: src}
}

func emptyDir(name string) corev1.Volume {
	return volume(name, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
}

func claimVolume(name, claim string) corev1.Volume {
	return volume(name, corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}})
}

func claim(ns, name string, block bool) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
	if block {
		mode := corev1.PersistentVolumeBlock
		pvc.Spec.VolumeMode = &mode
	}
	return pvc
}
