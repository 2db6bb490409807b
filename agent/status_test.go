package agent_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/holdfast-dev/holdfast/agent"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// otherNode is a node no agent process of this package serves: its work is driven by
// the test alone.
const otherNode = "node-without-agent"

func pendingBackup(t *testing.T, ns, name string) *v1.PodVolumeBackup {
	t.Helper()
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: otherNode, Pod: v1.PodReference{Name: "app", UID: "uid-app"}, Volume: "data",
			SourcePath: "/pod/app/data", StorageLocation: "fs", Repository: "fs-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	return pvb
}

// TestOnlyOneAgentClaimsTheWork is review L10: two agents that both believe they serve
// the node (two DaemonSets from two overlays, a stale NODE_NAME) read the same Pending
// backup and claim it at once. One claim wins; the other must not run the backup.
func TestOnlyOneAgentClaimsTheWork(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	for i := range 5 {
		pvb := pendingBackup(t, ns, "raced-"+string(rune('a'+i)))
		copies := []*v1.PodVolumeBackup{pvb.DeepCopy(), pvb.DeepCopy()}
		won := make([]bool, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for a := range 2 {
			wg.Go(func() {
				<-start
				won[a], errs[a] = agent.NewBackupSteps(env.Client, otherNode).Claim(ctxFor(t), copies[a])
			})
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("claims: %v, %v", errs[0], errs[1])
		}
		if won[0] == won[1] {
			t.Fatalf("%s: both agents claimed it: %v; exactly one may run it", pvb.Name, won)
		}
		got := &v1.PodVolumeBackup{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase != v1.RunInProgress || got.Status.StartTime == nil {
			t.Errorf("%s after the claim: phase %q, startTime %v", pvb.Name, got.Status.Phase, got.Status.StartTime)
		}
	}
}

// TestTheOutcomeSurvivesAFailedStatusWrite is review L3: one status write that the API
// server does not take (a timeout, a restarting API server) neither loses a Completed
// outcome nor the start time the failed write carried.
func TestTheOutcomeSurvivesAFailedStatusWrite(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	for _, tc := range []struct {
		name string
		// failWrite is the status write that fails: 1 the claim, 2 the final one.
		failWrite int32
	}{{"claim", 1}, {"final", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
			if err != nil {
				t.Fatal(err)
			}
			var writes atomic.Int32
			flaky := interceptor.NewClient(c, interceptor.Funcs{
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
					if sub == "status" && writes.Add(1) == tc.failWrite {
						return errors.New("injected: the API server did not answer")
					}
					return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
				},
			})
			steps := agent.NewBackupSteps(flaky, otherNode)
			pvb := pendingBackup(t, ns, "flaky-"+tc.name)
			claimed, err := steps.Claim(ctxFor(t), pvb)
			if err != nil {
				// The agent reconciles the work again and claims it anew.
				t.Logf("first claim: %v", err)
				claimed, err = steps.Claim(ctxFor(t), pvb)
			}
			if !claimed || err != nil {
				t.Fatalf("claim: %v, %v", claimed, err)
			}
			if err := steps.Complete(ctxFor(t), pvb, "snap-1"); err != nil {
				t.Fatalf("final status write: %v", err)
			}
			got := &v1.PodVolumeBackup{}
			if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
				t.Fatal(err)
			}
			st := got.Status
			if st.Phase != v1.RunCompleted || st.SnapshotID != "snap-1" || st.StartTime == nil || st.CompletionTime == nil {
				t.Errorf("after a failed status write: phase %q, snapshot %q, startTime %v, completionTime %v; want Completed, snap-1 and both times",
					st.Phase, st.SnapshotID, st.StartTime, st.CompletionTime)
			}
		})
	}
}

// TestAPassingAPIErrorDoesNotFailTheWork: a repository that cannot be read for a
// moment (an API server timeout) is retried, not taken for a Stalled repository that
// fails the backup for good.
func TestAPassingAPIErrorDoesNotFailTheWork(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	flaky := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*v1.BackupRepository); ok {
				return errors.New("injected: the API server did not answer")
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	pvb := pendingBackup(t, ns, "passing")
	if err := agent.NewBackupSteps(flaky, otherNode).Reconcile(ctxFor(t), client.ObjectKeyFromObject(pvb)); err == nil {
		t.Errorf("the reconcile returned no error; want the read error, for a retry")
	}
	got := &v1.PodVolumeBackup{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(pvb), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase == v1.RunFailed {
		t.Errorf("a passing API error failed the backup: %s", got.Status.Message)
	}
}

// TestDeletedWorkLeavesNoLockWait: a backup or restore that found its repository
// locked and was deleted during its wait leaves nothing behind in the agent; before,
// each one's wait stayed in memory as long as the agent ran.
func TestDeletedWorkLeavesNoLockWait(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	pvb := pendingBackup(t, ns, "deleted-while-waiting")
	key := client.ObjectKeyFromObject(pvb)
	backups := agent.NewBackupSteps(env.Client, otherNode)
	backups.LockedOut(key)
	if err := env.Client.Delete(ctxFor(t), pvb); err != nil {
		t.Fatal(err)
	}
	restores := agent.NewRestoreSteps(env.Client, otherNode)
	restores.LockedOut(client.ObjectKey{Namespace: ns, Name: "restore-deleted-while-waiting"})
	for what, steps := range map[string]interface {
		Reconcile(context.Context, client.ObjectKey) error
		LockWaits() int
	}{"backup": backups, "restore": restores} {
		name := key
		if what == "restore" {
			name.Name = "restore-deleted-while-waiting"
		}
		if err := steps.Reconcile(ctxFor(t), name); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := steps.LockWaits(); n != 0 {
			t.Errorf("the agent keeps %d lock waits after the %s was deleted, want 0", n, what)
		}
	}
}
