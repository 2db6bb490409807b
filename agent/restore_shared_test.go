package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Issue 15 item 4: a ReadWriteMany claim that two held pods mount is restored once, by
// the PodVolumeRestore of one of them; that one restore releases the restore-wait of
// both pods (the other pod runs on another node, or is not scheduled yet), and a
// failure reaches both.
func TestOneRestoreOfASharedClaimReleasesEveryPod(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	backup := sharedDataBackup(t, ns, repo)

	for _, tc := range []struct {
		name   string
		cancel bool
	}{{"restored", false}, {"canceled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			claim := "shared-" + tc.name
			pv := sharedClaim(t, ns, claim)
			vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: ns},
				Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}}, Source: &v1.RestoreSource{Latest: true}}}
			if err := env.Client.Create(ctxFor(t), vr); err != nil {
				t.Fatal(err)
			}
			// Both held as the webhook holds them: restore-wait learns its pod's UID.
			wait := restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})
			newPod := func(name, node string) *corev1.Pod {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec: corev1.PodSpec{NodeName: node, InitContainers: []corev1.Container{wait},
						Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
						Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
							PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}}}
				if err := env.Client.Create(ctxFor(t), p); err != nil {
					t.Fatal(err)
				}
				return p
			}
			a := newPod(tc.name+"-a", nodeName)
			b := newPod(tc.name+"-b", "") // elsewhere, or not scheduled yet
			dir := filepath.Join(fx.kubeletRoot, "pods", string(a.UID), "volumes", "kubernetes.io~cephfs", pv)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(fx.kubeletRoot, "pods", string(a.UID))) })

			h := heldPod{volume: volume{ns: ns, pod: a.Name, name: "data", uid: a.UID}, vr: vr}
			pvr := heldRestore(h, "data", repo, func(p *v1.PodVolumeRestore) {
				p.Spec.SnapshotID = backup.Status.SnapshotID
				p.Spec.Cancel = tc.cancel
			})
			if err := env.Client.Create(ctxFor(t), pvr); err != nil {
				t.Fatal(err)
			}
			got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed, v1.RunCanceled)
			want := v1.RunCompleted
			if tc.cancel {
				want = v1.RunCanceled
			}
			if got.Status.Phase != want {
				t.Fatalf("phase %s (%s), want %s", got.Status.Phase, got.Status.Message, want)
			}
			// Each pod's restore-wait, one after the other as they start, ends on the
			// one restore: neither waits for a restore of its own.
			for _, p := range []*corev1.Pod{a, b} {
				ctx, cancel := context.WithTimeout(ctxFor(t), time.Minute)
				err := restorewait.Wait(ctx, restorewait.Options{Volumes: []string{dir}, RestoreUID: string(vr.UID), PodUID: string(p.UID),
					Interval: 10 * time.Millisecond, Deadline: 30 * time.Second})
				cancel()
				switch {
				case tc.cancel && (err == nil || errors.Is(err, restorewait.ErrDeadline) || !strings.Contains(err.Error(), "the restore of")):
					t.Errorf("restore-wait of pod %s: %v, want the cancel's reason", p.Name, err)
				case !tc.cancel && err != nil:
					t.Errorf("restore-wait of pod %s: %v", p.Name, err)
				}
			}
			if !tc.cancel {
				if b, err := os.ReadFile(filepath.Join(dir, "shared.txt")); err != nil || string(b) != "shared data\n" {
					t.Errorf("shared.txt = %q, %v", b, err)
				}
				if _, err := os.Stat(filepath.Join(dir, restorewait.MarkerDir)); !os.IsNotExist(err) {
					t.Errorf("%s left in the volume after both pods started: %v", restorewait.MarkerDir, err)
				}
			}
		})
	}
}
