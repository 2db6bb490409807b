package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// result is one kubectl holdfast invocation's outcome.
type result struct {
	out, err string
	code     int
}

// runAsync starts kubectl holdfast in the background.
func runAsync(t *testing.T, args ...string) <-chan result {
	done := make(chan result, 1)
	go func() {
		out, stderr, code := holdfast(t, "", args...)
		done <- result{out, stderr, code}
	}()
	return done
}

// finishBackups plays the agent: it waits for the run's PodVolumeBackups in ns and
// ends them in phase.
func finishBackups(t *testing.T, ns, policy string, want int, phase v1.RunPhase, msg string) {
	t.Helper()
	e := testenv.Require(t, env)
	var list v1.PodVolumeBackupList
	testenv.Eventually(t, "the run's PodVolumeBackups", func() error {
		if err := e.Client.List(t.Context(), &list, client.InNamespace(ns), client.MatchingLabels{v1.LabelPolicy: policy}); err != nil {
			return err
		}
		if len(list.Items) != want {
			return fmt.Errorf("%d PodVolumeBackups, want %d", len(list.Items), want)
		}
		return nil
	})
	for i := range list.Items {
		b := &list.Items[i]
		b.Status.Phase, b.Status.Message = phase, msg
		b.Status.CompletionTime = &metav1.Time{Time: time.Now()}
		if phase == v1.RunCompleted {
			b.Status.BytesUploaded = 100
		}
		if err := e.Client.Status().Update(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
}

func waitResult(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(2 * time.Minute):
		t.Fatal("kubectl holdfast run did not return")
	}
	return result{}
}

// run sets the run-now annotation, follows the run the policy controller starts and
// exits 0 when it succeeds (the test completes the backups as the agent would), 1
// with the run's message when it fails; --no-wait returns at once.
func TestRunFollowsTheRunToItsEnd(t *testing.T) {
	o := newObjects(t)
	e := testenv.Require(t, env)
	o.locationReady()
	ns := e.Namespace(t, nil)
	o.app(ns, "web")
	name := "run-" + ns
	o.policy(name, fmt.Sprintf("namespace.metadata.name == %q", ns))

	done := runAsync(t, "run", name)
	finishBackups(t, ns, name, 1, v1.RunCompleted, "")
	r := waitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("run: exit %d, want 0:\n%s%s", r.code, r.out, r.err)
	}
	wantLines(t, r.out, "VolumeBackupPolicy "+name+": "+v1.AnnotationRunNow+"=", ": Succeeded, 1/1 volumes completed, 0 failed, 0 skipped")

	// The second run fails: exit 1 with the run's message.
	if err := e.Client.DeleteAllOf(t.Context(), &v1.PodVolumeBackup{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the first run's backups deleted", func() error {
		var list v1.PodVolumeBackupList
		if err := e.Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(list.Items) > 0 {
			return fmt.Errorf("%d left", len(list.Items))
		}
		return nil
	})
	done = runAsync(t, "run", name)
	finishBackups(t, ns, name, 1, v1.RunFailed, "the store is full")
	r = waitResult(t, done)
	if r.code != ExitError {
		t.Fatalf("failed run: exit %d, want 1:\n%s%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.err, "Failed") {
		t.Errorf("stderr %q does not say the run Failed", r.err)
	}

	// --no-wait sets the token and returns.
	out, stderr, code := holdfast(t, "", "run", "--no-wait", name)
	if code != ExitOK || !strings.Contains(out, v1.AnnotationRunNow) {
		t.Fatalf("--no-wait: exit %d: %s%s", code, out, stderr)
	}
}
