// Package conditions sets the Ready, Reconciling and Stalled conditions of Holdfast
// objects with kstatus semantics, so that Flux health checks, Argo CD and kubectl all
// read the same story from every kind.
package conditions

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Common reasons. Controllers add their own, one CamelCase word or phrase.
const (
	ReasonSucceeded   = "Succeeded"
	ReasonProgressing = "Progressing"
)

func set(conds *[]metav1.Condition, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	})
}

// MarkReady says the object does what it asks: Ready=True, no Reconciling, no Stalled.
func MarkReady(conds *[]metav1.Condition, gen int64, reason, msg string) {
	set(conds, gen, v1.ConditionReady, metav1.ConditionTrue, reason, msg)
	meta.RemoveStatusCondition(conds, v1.ConditionReconciling)
	meta.RemoveStatusCondition(conds, v1.ConditionStalled)
}

// MarkReconciling says work is in flight: Reconciling=True and Ready=Unknown (unless
// Ready is already True: a Ready object that is re-checking stays Ready).
func MarkReconciling(conds *[]metav1.Condition, gen int64, reason, msg string) {
	set(conds, gen, v1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
	meta.RemoveStatusCondition(conds, v1.ConditionStalled)
	if !meta.IsStatusConditionTrue(*conds, v1.ConditionReady) {
		set(conds, gen, v1.ConditionReady, metav1.ConditionUnknown, reason, msg)
	}
}

// MarkNotReady says the object cannot work now for a reason that may pass without the
// user doing anything (a store that is down): Ready=False, Reconciling=True while the
// controller keeps retrying, no Stalled.
func MarkNotReady(conds *[]metav1.Condition, gen int64, reason, msg string) {
	set(conds, gen, v1.ConditionReady, metav1.ConditionFalse, reason, msg)
	set(conds, gen, v1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
	meta.RemoveStatusCondition(conds, v1.ConditionStalled)
}

// MarkStalled says only a change by the user can help: Stalled=True, Ready=False, no
// Reconciling. The message is the one sentence a person needs.
func MarkStalled(conds *[]metav1.Condition, gen int64, reason, msg string) {
	set(conds, gen, v1.ConditionStalled, metav1.ConditionTrue, reason, msg)
	set(conds, gen, v1.ConditionReady, metav1.ConditionFalse, reason, msg)
	meta.RemoveStatusCondition(conds, v1.ConditionReconciling)
}

// IsReady reports whether Ready is True.
func IsReady(conds []metav1.Condition) bool {
	return meta.IsStatusConditionTrue(conds, v1.ConditionReady)
}

// ReadyMessage returns the message of the Ready condition, or "".
func ReadyMessage(conds []metav1.Condition) string {
	if c := meta.FindStatusCondition(conds, v1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}

// IsStalled reports whether Stalled is True.
func IsStalled(conds []metav1.Condition) bool {
	return meta.IsStatusConditionTrue(conds, v1.ConditionStalled)
}
