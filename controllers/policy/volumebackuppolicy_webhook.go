package policy

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// +kubebuilder:webhook:path=/validate-backup-holdfast-dev-v1alpha1-volumebackuppolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=backup.holdfast.dev,resources=volumebackuppolicies,verbs=create;update,versions=v1alpha1,name=vvolumebackuppolicy.holdfast.dev,admissionReviewVersions=v1

// VolumeBackupPolicyValidator rejects a policy whose selector, coverage exclusion or
// hook pods expression does not compile, does not return bool or is too costly, and one whose schedule cron or
// time zone is invalid, naming the field.
type VolumeBackupPolicyValidator struct {
	Engine *celpolicy.Engine
}

// SetupWebhookWithManager registers the validating webhook.
func (v *VolumeBackupPolicyValidator) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &v1.VolumeBackupPolicy{}).WithValidator(v).Complete()
}

// ValidateCreate validates a new policy with the strict environment.
func (v *VolumeBackupPolicyValidator) ValidateCreate(_ context.Context, p *v1.VolumeBackupPolicy) (admission.Warnings, error) {
	errs := v.validateHooks(p, nil)
	return nil, v.validate(p, v.Engine.Validate, true, true, errs...)
}

// ValidateUpdate validates a changed selector with the strict environment, and an
// unchanged one with the permissive environment used for stored expressions, so that
// an expression admitted by an older Holdfast does not block unrelated edits (a
// run-now annotation) after an upgrade.
func (v *VolumeBackupPolicyValidator) ValidateUpdate(_ context.Context, old, p *v1.VolumeBackupPolicy) (admission.Warnings, error) {
	check := v.Engine.Validate
	if old.Spec.Selector == p.Spec.Selector {
		check = func(sel v1.VolumeSelector) error {
			_, err := v.Engine.Compile(sel)
			return err
		}
	}
	// A stored schedule whose jitter no longer fits (admitted by an older Holdfast)
	// does not block unrelated edits; changing the schedule checks it.
	return nil, v.validate(p, check, !equality.Semantic.DeepEqual(old.Spec.Schedule, p.Spec.Schedule),
		exclusion(old) != exclusion(p), v.validateHooks(p, old)...)
}

// validateHooks compiles the pods expression of every hook, naming spec.hooks[i].pods:
// strictly when it is new, with the permissive environment when old already held the
// same expression.
func (v *VolumeBackupPolicyValidator) validateHooks(p, old *v1.VolumeBackupPolicy) field.ErrorList {
	stored := map[string]bool{}
	if old != nil {
		for _, h := range old.Spec.Hooks {
			stored[h.Pods] = true
		}
	}
	var errs field.ErrorList
	for i, h := range p.Spec.Hooks {
		name := celpolicy.HookPodsField(i)
		var err error
		if stored[h.Pods] {
			_, err = v.Engine.CompileHookPods(name, h.Pods)
		} else {
			err = v.Engine.ValidateHookPods(name, h.Pods)
		}
		path := field.NewPath("spec", "hooks").Index(i).Child("pods")
		for _, e := range celpolicy.Errors(err) {
			errs = append(errs, expressionError(path, h.Pods, e))
		}
	}
	return errs
}

// exclusion is the policy's coverage exclusion, or "".
func exclusion(p *v1.VolumeBackupPolicy) string {
	if p.Spec.Coverage == nil {
		return ""
	}
	return p.Spec.Coverage.Exclude
}

// validateExclusion checks spec.coverage.exclude as the selector is checked: strictly
// when it is new or changed, with the permissive environment when it is stored.
func (v *VolumeBackupPolicyValidator) validateExclusion(p *v1.VolumeBackupPolicy, strict bool) field.ErrorList {
	expr := exclusion(p)
	check := v.Engine.ValidateExclusion
	if !strict {
		check = func(expr string) error {
			_, err := v.Engine.CompileExclusion(expr)
			return err
		}
	}
	var errs field.ErrorList
	for _, e := range celpolicy.Errors(check(expr)) {
		errs = append(errs, expressionError(field.NewPath("spec", "coverage", "exclude"), expr, e))
	}
	return errs
}

// expressionError is the field error of a CEL expression's error e at path.
func expressionError(path *field.Path, expr string, e *celpolicy.Error) *field.Error {
	switch e.Type {
	case celpolicy.ErrorTooLong:
		return field.TooLong(path, "", celpolicy.MaxExpressionLength)
	case celpolicy.ErrorInternal:
		return field.InternalError(path, fmt.Errorf("%s", e.Detail))
	}
	return field.Invalid(path, expr, e.Detail)
}

// ValidateDelete allows every deletion.
func (v *VolumeBackupPolicyValidator) ValidateDelete(context.Context, *v1.VolumeBackupPolicy) (admission.Warnings, error) {
	return nil, nil
}

func (v *VolumeBackupPolicyValidator) validate(p *v1.VolumeBackupPolicy, check func(v1.VolumeSelector) error, checkJitter, strictExclusion bool, more ...*field.Error) error {
	errs := append(v.validateExclusion(p, strictExclusion), more...)
	for _, e := range celpolicy.Errors(check(p.Spec.Selector)) {
		path := field.NewPath("spec", "selector", "volumes")
		expr := p.Spec.Selector.Volumes
		if e.Field == celpolicy.FieldNamespaces {
			path, expr = field.NewPath("spec", "selector", "namespaces"), p.Spec.Selector.Namespaces
		}
		errs = append(errs, expressionError(path, expr, e))
	}
	if p.Spec.Schedule != nil {
		sched, err := parseSchedule(p.Spec.Schedule)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(field.NewPath("spec", "schedule"), p.Spec.Schedule.Cron+" "+p.Spec.Schedule.TimeZone, err.Error()))
		case checkJitter:
			errs = append(errs, jitterFits(sched, p.Spec.Schedule, time.Now())...)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(v1.GroupVersion.WithKind("VolumeBackupPolicy").GroupKind(), p.Name, errs)
}

// jitterFits rejects a jitter that cannot fit between two ticks: a run creates its
// volumes over the jitter window plus a minute of retries (createGrace), and a tick
// that comes before that supersedes the run, so the volumes whose offset falls after
// the next tick would never be backed up (review H5).
func jitterFits(sched *cronSchedule, s *v1.Schedule, now time.Time) field.ErrorList {
	if s.Jitter == nil || s.Jitter.Duration <= 0 {
		return nil
	}
	interval := sched.shortestInterval(now)
	if interval == 0 || s.Jitter.Duration+createGrace <= interval {
		return nil
	}
	return field.ErrorList{field.Invalid(field.NewPath("spec", "schedule", "jitter"), s.Jitter.Duration.String(),
		fmt.Sprintf("must be at most %s: the shortest interval between ticks of %q is %s, and a run needs its jitter plus %s of retries before the next tick",
			max(interval-createGrace, 0), s.Cron, interval, createGrace))}
}
