package policy

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
)

// ErrorType separates what the user must fix from what went wrong inside Holdfast.
type ErrorType string

const (
	// ErrorInvalid: the expression does not parse or type-check, or is not bool.
	ErrorInvalid ErrorType = "Invalid"
	// ErrorTooLong: the expression is longer than MaxExpressionLength.
	ErrorTooLong ErrorType = "TooLong"
	// ErrorTooCostly: the estimated worst-case cost is above the limit.
	ErrorTooCostly ErrorType = "TooCostly"
	// ErrorEvaluation: evaluating the expression failed on one object (a missing
	// field without has(), a runtime cost limit, a bad conversion).
	ErrorEvaluation ErrorType = "Evaluation"
	// ErrorBudget: the selection pass spent its cost budget (Cache.Budget) before this
	// evaluation; the object was not evaluated.
	ErrorBudget ErrorType = "BudgetExceeded"
	// ErrorInternal: the environment itself is broken; a bug in Holdfast.
	ErrorInternal ErrorType = "Internal"
)

// Error is an expression the user must fix (or, for ErrorInternal, a Holdfast bug). It
// names the field and carries the compiler's message, with line and column.
type Error struct {
	// Field is the path of the expression in the policy (spec.selector.volumes).
	Field string
	// Type classifies the error.
	Type ErrorType
	// Detail is the compiler's or evaluator's message.
	Detail string
	// Line and Column locate the first problem in the expression, 1-based; 0 when
	// unknown.
	Line, Column int
}

func (e *Error) Error() string {
	return e.Field + ": " + e.Detail
}

// UserError reports whether only a change of the policy can fix err.
func (e *Error) UserError() bool { return e.Type != ErrorInternal }

func compileError(field string, issues *cel.Issues) *Error {
	e := &Error{Field: field, Type: ErrorInvalid, Detail: "compilation failed: " + restoreNamespace(strings.TrimSpace(issues.String()))}
	if errs := issues.Errors(); len(errs) > 0 {
		// cel-go counts columns from 0; people and editors count from 1.
		e.Line, e.Column = errs[0].Location.Line(), errs[0].Location.Column()+1
	}
	return e
}

func errorf(field string, typ ErrorType, format string, args ...any) *Error {
	return &Error{Field: field, Type: typ, Detail: fmt.Sprintf(format, args...)}
}
