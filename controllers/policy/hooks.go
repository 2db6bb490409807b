package policy

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/hooks"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// ReasonInvalidHook: a run failure reason. The pod's hooks could not be resolved (a
// malformed Velero hook annotation, a hook naming a container the pod does not have),
// so its volumes were not backed up; the example says which annotation or field.
const ReasonInvalidHook = "InvalidHook"

// ReasonHookFailed: a run failure reason. A pre hook with onError Fail failed, so the
// pod's volumes were not backed up.
const ReasonHookFailed = v1.ReasonHookFailed

// podHooks is the result of resolving one pod's hooks in a pass.
type podHooks struct {
	hooks *v1.ResolvedHooks
	err   error
}

// hooksOf resolves the hooks of the pod of target t once per pass: nil for a claim no
// pod uses (its reader pod is Holdfast's own) and for a pod without hooks. An error
// says, in a sentence, why the pod's volumes cannot be backed up.
func (r *VolumeBackupPolicyReconciler) hooksOf(ctx context.Context, s *scope, t target) (*v1.ResolvedHooks, error) {
	if t.unmounted != nil || t.pod == nil {
		return nil, nil
	}
	if len(s.policy.Spec.Hooks) == 0 && !hooks.HasAnnotations(t.pod) {
		return nil, nil
	}
	if s.podHooks == nil {
		s.podHooks = map[types.UID]podHooks{}
	}
	if got, ok := s.podHooks[t.pod.UID]; ok {
		return got.hooks, got.err
	}
	h, err := r.resolveHooks(ctx, s, t.pod)
	if err != nil {
		err = fmt.Errorf("the hooks of pod %s cannot run: %w; its volumes were not backed up", t.pod.Name, err)
	}
	s.podHooks[t.pod.UID] = podHooks{hooks: h, err: err}
	return h, err
}

func (r *VolumeBackupPolicyReconciler) resolveHooks(ctx context.Context, s *scope, pod *corev1.Pod) (*v1.ResolvedHooks, error) {
	var ns *corev1.Namespace
	var cache celpolicy.Cache
	return hooks.Resolve(pod, s.policy.Spec.Hooks, func(i int) (bool, error) {
		h := s.policy.Spec.Hooks[i]
		if h.Pods == "" {
			return true, nil
		}
		expr, err := s.hookPods(r.Engine, i)
		if err != nil {
			return false, err
		}
		if ns == nil {
			ns = &corev1.Namespace{}
			if err := r.Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err != nil {
				return false, fmt.Errorf("reading namespace %s: %w", pod.Namespace, err)
			}
		}
		return expr.MatchPod(ns, pod, &cache)
	})
}

// jitterKey is what a target's jitter offset is hashed from: its source, or its pod
// when the pod has hooks, so that all the hooked volumes of a pod are created in the
// same pass and its pre hooks run once before any of them is read.
func jitterKey(t target, hooked bool) string {
	if hooked {
		return "pod:" + string(t.pod.UID)
	}
	return t.sourcePath
}

// compiledHookPods is the compiled pods expression of one hook, or why it does not
// compile.
type compiledHookPods struct {
	expr *celpolicy.Expression
	err  error
}

// hookPods compiles the pods expression of spec.hooks[i] once per pass.
func (s *scope) hookPods(engine *celpolicy.Engine, i int) (*celpolicy.Expression, error) {
	if s.compiledHookPods == nil {
		s.compiledHookPods = map[int]compiledHookPods{}
	}
	c, ok := s.compiledHookPods[i]
	if !ok {
		c.expr, c.err = engine.CompileHookPods(celpolicy.HookPodsField(i), s.policy.Spec.Hooks[i].Pods)
		s.compiledHookPods[i] = c
	}
	return c.expr, c.err
}
