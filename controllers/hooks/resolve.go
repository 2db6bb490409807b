package hooks

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// The Velero pod annotations of backup hooks, as Velero reads them: <stage>.hook.backup.velero.io/<key>.
const (
	veleroPrefixPre  = "pre.hook.backup.velero.io/"
	veleroPrefixPost = "post.hook.backup.velero.io/"
	// veleroPrefixLegacy is Velero's older form of the pre hook, without a phase,
	// which Velero still reads when the pod has no pre.hook annotation.
	veleroPrefixLegacy = "hook.backup.velero.io/"
	keyContainer       = "container"
	keyCommand         = "command"
	keyOnError         = "on-error"
	keyTimeout         = "timeout"
)

// DefaultTimeout is a hook's timeout when none is set, as in Velero.
const DefaultTimeout = 30 * time.Second

// maxTimeout bounds a hook's timeout, as spec.hooks[].pre.timeout is bounded.
const maxTimeout = time.Hour

// HasAnnotations reports whether the pod carries a Velero backup hook annotation: its
// hooks then come from its annotations only, as in Velero.
func HasAnnotations(pod *corev1.Pod) bool {
	for k := range pod.Annotations {
		if strings.HasPrefix(k, veleroPrefixPre) || strings.HasPrefix(k, veleroPrefixPost) || strings.HasPrefix(k, veleroPrefixLegacy) {
			return true
		}
	}
	return false
}

// FromAnnotations reads the pod's Velero hook annotations with Velero's semantics
// (hook.backup.velero.io/* without a phase is the pre hook when no pre.hook.* is set): the
// command is a JSON array, or a plain string taken as one argument; on-error is Fail
// (default) or Continue; timeout a Go duration (default 30s); container defaults to
// the pod's first container. A stage without a command has no hook. A malformed
// annotation is an error naming it: it is never ignored.
func FromAnnotations(pod *corev1.Pod) (*v1.ResolvedHooks, error) {
	out := &v1.ResolvedHooks{}
	for _, stage := range []struct {
		prefix, name string
		into         *[]v1.ResolvedHook
	}{{veleroPrefixPre, "pre", &out.Pre}, {veleroPrefixPost, "post", &out.Post}} {
		prefix := stage.prefix
		if prefix == veleroPrefixPre && !hasStage(pod, veleroPrefixPre) && hasStage(pod, veleroPrefixLegacy) {
			prefix = veleroPrefixLegacy
		}
		h, err := annotationHook(pod, prefix, stage.name)
		if err != nil {
			return nil, err
		}
		if h != nil {
			*stage.into = []v1.ResolvedHook{*h}
		}
	}
	return out, nil
}

// hasStage reports whether the pod has an annotation with the prefix.
func hasStage(pod *corev1.Pod, prefix string) bool {
	for k := range pod.Annotations {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func annotationHook(pod *corev1.Pod, prefix, name string) (*v1.ResolvedHook, error) {
	a := pod.Annotations
	raw, ok := a[prefix+keyCommand]
	if !ok {
		for _, k := range []string{keyContainer, keyOnError, keyTimeout} {
			if _, set := a[prefix+k]; set {
				return nil, fmt.Errorf("annotation %s%s is set but %s%s is not: the hook has no command", prefix, k, prefix, keyCommand)
			}
		}
		return nil, nil
	}
	command, err := parseCommand(raw)
	if err != nil {
		return nil, fmt.Errorf("annotation %s%s: %w", prefix, keyCommand, err)
	}
	h := &v1.ResolvedHook{Name: name, Source: v1.HookSourceAnnotations, Command: command,
		Timeout: metav1.Duration{Duration: DefaultTimeout}, OnError: v1.HookFail}
	if v, ok := a[prefix+keyOnError]; ok {
		switch v1.HookOnError(v) {
		case v1.HookFail, v1.HookContinue:
			h.OnError = v1.HookOnError(v)
		default:
			return nil, fmt.Errorf("annotation %s%s is %q: it must be Fail or Continue", prefix, keyOnError, v)
		}
	}
	if v, ok := a[prefix+keyTimeout]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxTimeout {
			return nil, fmt.Errorf("annotation %s%s is %q: it must be a duration above 0 and at most %s, such as 30s or 2m", prefix, keyTimeout, v, maxTimeout)
		}
		h.Timeout.Duration = d
	}
	c, err := container(pod, a[prefix+keyContainer])
	if err != nil {
		return nil, fmt.Errorf("annotation %s%s: %w", prefix, keyContainer, err)
	}
	h.Container = c
	return h, nil
}

// parseCommand reads a command the way Velero does: a JSON array of strings, or any
// other text as a single argument.
func parseCommand(raw string) ([]string, error) {
	trimmed := strings.TrimSpace(raw)
	if strings.HasPrefix(trimmed, "[") {
		var cmd []string
		if err := json.Unmarshal([]byte(trimmed), &cmd); err != nil {
			return nil, fmt.Errorf("%q is not a JSON array of strings: %v", raw, err)
		}
		if len(cmd) == 0 {
			return nil, fmt.Errorf("the command is an empty array")
		}
		return cmd, nil
	}
	if trimmed == "" {
		return nil, fmt.Errorf("the command is empty")
	}
	return []string{raw}, nil
}

// container is the container a hook runs in: name, checked against the pod's
// containers and native sidecars (init containers with restartPolicy Always), or the
// pod's first container when name is empty.
func container(pod *corev1.Pod, name string) (string, error) {
	if name == "" {
		if len(pod.Spec.Containers) == 0 {
			return "", fmt.Errorf("pod %s has no container", pod.Name)
		}
		return pod.Spec.Containers[0].Name, nil
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return name, nil
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			if IsSidecar(c) {
				return name, nil
			}
			return "", fmt.Errorf("container %q of pod %s is an init container that is not a native sidecar (restartPolicy Always): it has ended before the backup", name, pod.Name)
		}
	}
	return "", fmt.Errorf("pod %s has no container %q", pod.Name, name)
}

// IsSidecar reports whether an init container is a native sidecar, which keeps
// running beside the pod's containers.
func IsSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// Resolve is the hooks of pod: its Velero annotations when it has any (the policy's
// hooks are then not run for it, as in Velero), else the policy hooks whose pods
// expression matches (match(i) for spec.hooks[i]). nil when the pod has no hook.
func Resolve(pod *corev1.Pod, policyHooks []v1.BackupHook, match func(i int) (bool, error)) (*v1.ResolvedHooks, error) {
	var out *v1.ResolvedHooks
	if HasAnnotations(pod) {
		h, err := FromAnnotations(pod)
		if err != nil {
			return nil, err
		}
		out = h
	} else {
		out = &v1.ResolvedHooks{}
		for i, ph := range policyHooks {
			ok, err := match(i)
			if err != nil {
				return nil, fmt.Errorf("hook %s: evaluating spec.hooks[%d].pods: %w", ph.Name, i, err)
			}
			if !ok {
				continue
			}
			c, err := container(pod, ph.Container)
			if err != nil {
				return nil, fmt.Errorf("hook %s (spec.hooks[%d].container): %w", ph.Name, i, err)
			}
			if ph.Pre != nil {
				out.Pre = append(out.Pre, fromCommand(ph.Name, c, ph.Pre))
			}
			if ph.Post != nil {
				out.Post = append(out.Post, fromCommand(ph.Name, c, ph.Post))
			}
		}
	}
	if len(out.Pre) == 0 && len(out.Post) == 0 {
		return nil, nil
	}
	return out, nil
}

func fromCommand(name, container string, c *v1.HookCommand) v1.ResolvedHook {
	h := v1.ResolvedHook{Name: name, Source: name, Container: container, Command: append([]string(nil), c.Command...),
		Timeout: metav1.Duration{Duration: DefaultTimeout}, OnError: c.OnError}
	if c.Timeout != nil && c.Timeout.Duration > 0 {
		h.Timeout = *c.Timeout
	}
	if h.OnError == "" {
		h.OnError = v1.HookFail
	}
	return h
}
