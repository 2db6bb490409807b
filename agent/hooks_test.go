package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// A backup whose pod has pre hooks stays Pending, saying so, until the manager set
// its PreHooks condition, and reads the volume only then: what the pre hook wrote
// (here the test, as the hook would) is in the snapshot.
func TestBackupWaitsForThePreHooks(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	v := newVolume(t, ns, "app")
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: "hooked", Namespace: ns, Labels: map[string]string{v1.LabelPolicy: "agent-test", v1.LabelHooks: "true"}},
		Spec: v1.PodVolumeBackupSpec{Node: nodeName, Pod: v1.PodReference{Name: v.pod, UID: string(v.uid)}, Volume: v.name,
			SourcePath: "/deployment/app/data", StorageLocation: "minio", Repository: repo, Uploader: v1.UploaderKopia,
			Hooks: &v1.ResolvedHooks{Pre: []v1.ResolvedHook{{Name: "pre", Source: v1.HookSourceAnnotations, Container: "app",
				Command: []string{"touch", "/data/marker"}, Timeout: metav1.Duration{Duration: time.Minute}, OnError: v1.HookFail}}}},
	}
	if err := env.Client.Create(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	got := &v1.PodVolumeBackup{}
	waitFor(t, "the backup to wait for the pre hooks", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
			return err
		}
		if got.Status.Phase != v1.RunPending || got.Status.Message != "waiting for the pre hooks of pod app" {
			return fmt.Errorf("phase %q, message %q", got.Status.Phase, got.Status.Message)
		}
		return nil
	})

	// The pre hook writes its marker; the manager records PreHooks.
	if err := os.WriteFile(filepath.Join(v.dir, "marker"), []byte("quiesced\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "PreHooks to be recorded", func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
			return err
		}
		if got.Status.Phase != v1.RunPending {
			return fmt.Errorf("the backup left Pending (%s: %s) before its pre hooks ran", got.Status.Phase, got.Status.Message)
		}
		apimeta.SetStatusCondition(&got.Status.Conditions, metav1.Condition{Type: v1.ConditionPreHooks, Status: metav1.ConditionTrue,
			Reason: v1.ReasonHooksSucceeded, Message: "the pre hook ran"})
		return env.Client.Status().Update(ctxFor(t), got)
	})
	done := waitBackupPhase(t, pvb, v1.RunCompleted, v1.RunFailed)
	if done.Status.Phase != v1.RunCompleted || done.Status.Progress.TotalFiles != 1 {
		t.Fatalf("phase %s (%s), %d files; want Completed with the marker the pre hook wrote", done.Status.Phase, done.Status.Message, done.Status.Progress.TotalFiles)
	}
	if c := apimeta.FindStatusCondition(done.Status.Conditions, v1.ConditionPreHooks); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("PreHooks = %+v after the backup, want it kept", c)
	}
}
