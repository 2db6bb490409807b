package restore

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/metrics"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// durationCount is how many restore durations of an outcome were observed.
func durationCount(t *testing.T, outcome string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.RestoreDurations.WithLabelValues(outcome).(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// reconciles is how many reconciles the VolumeRestore controller finished.
func reconciles(t *testing.T) float64 {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range fams {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "volumerestore" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestARestoreThatEndsIsCountedOnce: holdfast_restores_total counts a restore when it
// ends, by namespace and outcome, with its duration; a reconcile of the ended restore
// does not count it again.
func TestARestoreThatEndsIsCountedOnce(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	createBackup(t, ns, "data-backup", "/pvc/data", "k-data", time.Now())
	createPod(t, ns, "app", map[string]string{"app": "m"}, "node-1", nil, claimVolume("data", "data"))
	durations := durationCount(t, "Completed")
	createRestore(t, ns, "r", v1.VolumeRestoreSpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "m"}},
		RunningPods: v1.RunningPodsOverwrite,
		Source:      &v1.RestoreSource{Latest: true},
	})
	testenv.Eventually(t, "the volume being restored", func() error {
		if n := len(restoresOf(t, ns, "r")); n != 1 {
			return fmt.Errorf("%d restores", n)
		}
		return nil
	})
	completed := metrics.Restores.WithLabelValues(ns, "Completed")
	if n := testutil.ToFloat64(completed); n != 0 {
		t.Fatalf("a restore in progress is counted: %v", n)
	}
	finishRestores(t, ns, "r", v1.RunCompleted, "")
	testenv.Eventually(t, "restore Completed", func() error {
		if p := getRestore(t, ns, "r").Status.Phase; p != v1.RestoreCompleted {
			return fmt.Errorf("phase %q", p)
		}
		return nil
	})
	// The manager counts the restore after its Patch of the final phase returns, so
	// the API server can show Completed a moment before the count is there.
	testenv.Eventually(t, "the Completed restore counted", func() error {
		if n := testutil.ToFloat64(completed); n != 1 {
			return fmt.Errorf("holdfast_restores_total{namespace=%q,outcome=Completed} = %v, want 1", ns, n)
		}
		if n := durationCount(t, "Completed"); n <= durations {
			return fmt.Errorf("no restore duration observed for Completed (%d before, %d after)", durations, n)
		}
		return nil
	})

	// Another reconcile of the ended restore (an edit) counts nothing.
	before := reconciles(t)
	vr := getRestore(t, ns, "r")
	patch := client.MergeFrom(vr.DeepCopy())
	vr.Annotations = map[string]string{"touched": "yes"}
	if err := env.Client.Patch(ctxFor(t), vr, patch); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a reconcile of the ended restore", func() error {
		if n := reconciles(t); n <= before {
			return fmt.Errorf("%v reconciles, as before", n)
		}
		return nil
	})
	if n := testutil.ToFloat64(completed); n != 1 {
		t.Errorf("after another reconcile, holdfast_restores_total{outcome=Completed} = %v, want 1", n)
	}
}

// TestEndCounterCountsATransitionOnce: only a write from a running phase to a final
// one counts, and the same restore once however often that write is repeated.
func TestEndCounterCountsATransitionOnce(t *testing.T) {
	var c endCounter
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "end-counter-test", Name: "r", UID: types.UID("u1"),
		CreationTimestamp: metav1.NewTime(now.Add(-90 * time.Second))}}
	vr.Status.Phase = v1.RestoreFailed
	counter := metrics.Restores.WithLabelValues("end-counter-test", "Failed")
	for _, step := range []struct {
		name   string
		before v1.RestorePhase
		want   bool
	}{
		{"read final: a restart or a later reconcile", v1.RestoreFailed, false},
		{"the write that ended it", v1.RestoreInProgress, true},
		{"the same write again, from a stale cache", v1.RestoreInProgress, false},
	} {
		if got := c.observe(step.before, vr, now); got != step.want {
			t.Errorf("%s: counted %v, want %v", step.name, got, step.want)
		}
	}
	if n := testutil.ToFloat64(counter); n != 1 {
		t.Errorf("holdfast_restores_total = %v, want 1", n)
	}
	vr.Status.Phase = v1.RestoreInProgress
	if c.observe(v1.RestorePending, vr, now) {
		t.Error("a restore that started is counted")
	}
}
