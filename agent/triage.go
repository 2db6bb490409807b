package agent

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// workState is what triage needs to know of a PodVolumeBackup or PodVolumeRestore.
type workState struct {
	phase     v1.RunPhase
	cancel    bool
	deleting  bool
	namespace string
	pod       v1.PodReference
}

// verdict is what a reconcile does after triage.
type verdict int

const (
	// verdictNone: nothing to do (finished, or a running job was looked after).
	verdictNone verdict = iota
	// verdictStart: a Pending object to start.
	verdictStart
	// verdictRestarted: left InProgress by an agent that restarted; fail it.
	verdictRestarted
	// verdictCanceledEarly: canceled before it started.
	verdictCanceledEarly
)

// triage is the part of Reconcile the backup and restore reconcilers share. A job of
// this process is stopped when the user cancels it, the object is deleted or its pod
// goes away. For an object with no job here, the decision is taken on a fresh read
// from the API server (fresh), because the cache may lag behind a job of this process
// that just finished: acting on it could fail or repeat finished work.
func (a *Agent) triage(ctx context.Context, jobs *jobs, key types.NamespacedName, kind string, cached workState, fresh func() (workState, error)) (verdict, error) {
	if isFinished(cached.phase) {
		return verdictNone, nil
	}
	if jobs.isRunning(key) {
		switch {
		case cached.deleting:
			jobs.stop(key, fmt.Sprintf("the %s was deleted while it ran", kind))
		case cached.cancel:
			jobs.stop(key, "")
		default:
			if gone, why := a.podGone(ctx, cached.namespace, cached.pod); gone {
				jobs.stop(key, why)
			}
		}
		return verdictNone, nil
	}
	if cached.deleting {
		return verdictNone, nil
	}
	st, err := fresh()
	if err != nil {
		return verdictNone, client.IgnoreNotFound(err)
	}
	switch {
	case isFinished(st.phase), st.deleting:
		return verdictNone, nil
	case st.phase == v1.RunInProgress:
		return verdictRestarted, nil
	case st.cancel:
		return verdictCanceledEarly, nil
	}
	return verdictStart, nil
}

func backupState(pvb *v1.PodVolumeBackup) workState {
	return workState{phase: pvb.Status.Phase, cancel: pvb.Spec.Cancel, deleting: !pvb.DeletionTimestamp.IsZero(),
		namespace: pvb.Namespace, pod: pvb.Spec.Pod}
}

func restoreState(pvr *v1.PodVolumeRestore) workState {
	return workState{phase: pvr.Status.Phase, cancel: pvr.Spec.Cancel, deleting: !pvr.DeletionTimestamp.IsZero(),
		namespace: pvr.Namespace, pod: pvr.Spec.Pod}
}
