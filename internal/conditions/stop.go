package conditions

import (
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
)

// A reconcile step stops in one of three ways, and Result maps each to conditions and a
// requeue in one place:
//
//   - Stalled: only a change by the user can help (a selector that does not compile, a
//     grant that is missing). Stalled=True, Ready=False, no requeue, no error.
//   - Waiting: a dependency is not there yet and will be watched or polled (a store that
//     is still probing, a pod not yet scheduled). Reconciling=True, requeue after the
//     step's interval, no error.
//   - Transient: anything else (an API error, a store that timed out). Ready=False,
//     Reconciling=True, the error is returned so controller-runtime backs off.
//
// A plain error is Transient with reason "Error".

// Stop says how and why a step stopped. Use Stall, Wait or Transient to make one.
type Stop struct {
	kind    stopKind
	Reason  string
	Message string
	// After is when a Waiting step wants to be run again; zero waits for a watch.
	After time.Duration
	err   error
}

type stopKind int

const (
	stopStalled stopKind = iota + 1
	stopWaiting
	stopTransient
)

func (s *Stop) Error() string {
	if s.err != nil && s.Message == "" {
		return s.err.Error()
	}
	return s.Message
}

func (s *Stop) Unwrap() error { return s.err }

// Stall stops a step until the user changes something; msg is the one sentence they need.
func Stall(reason, format string, args ...any) error {
	return &Stop{kind: stopStalled, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Wait stops a step until a dependency is ready; after > 0 polls, 0 relies on a watch.
func Wait(reason string, after time.Duration, format string, args ...any) error {
	return &Stop{kind: stopWaiting, Reason: reason, After: after, Message: fmt.Sprintf(format, args...)}
}

// Transient stops a step on an error that retrying may fix; err is returned to
// controller-runtime, which backs off.
func Transient(reason string, err error) error {
	return &Stop{kind: stopTransient, Reason: reason, Message: err.Error(), err: err}
}

// StopIsStalled reports whether err (or an error it wraps) is a Stall.
func StopIsStalled(err error) bool { return kindOf(err) == stopStalled }

// StopIsWaiting reports whether err (or an error it wraps) is a Wait.
func StopIsWaiting(err error) bool { return kindOf(err) == stopWaiting }

func kindOf(err error) stopKind {
	var s *Stop
	if errors.As(err, &s) {
		return s.kind
	}
	if err != nil {
		return stopTransient
	}
	return 0
}

// Result sets the conditions for a step's error and says what controller-runtime should
// do next. A nil error leaves the conditions alone (the caller marks Ready) and returns a
// zero result.
func Result(conds *[]metav1.Condition, gen int64, err error) (ctrl.Result, error) {
	if err == nil {
		return ctrl.Result{}, nil
	}
	var s *Stop
	if !errors.As(err, &s) {
		MarkNotReady(conds, gen, "Error", err.Error())
		return ctrl.Result{}, err
	}
	switch s.kind {
	case stopStalled:
		MarkStalled(conds, gen, s.Reason, s.Message)
		return ctrl.Result{}, nil
	case stopWaiting:
		MarkReconciling(conds, gen, s.Reason, s.Message)
		return ctrl.Result{RequeueAfter: s.After}, nil
	default:
		MarkNotReady(conds, gen, s.Reason, s.Message)
		return ctrl.Result{}, err
	}
}
