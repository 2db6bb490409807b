package restore

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
)

// HelperConfigMapName is the ConfigMap, in the operator namespace, that configures the
// restore-wait init container. Every key is optional.
const HelperConfigMapName = "holdfast-restore-helper"

// helperSettings is what the restore-wait init container looks like.
type helperSettings struct {
	Image           string
	Resources       corev1.ResourceRequirements
	SecurityContext *corev1.SecurityContext
	// Deadline is how long restore-wait waits before it exits non-zero with the
	// reason; 0 waits without a limit.
	Deadline time.Duration
}

// defaultHelper runs restore-wait small, unprivileged and read-only: it only reads the
// agent's markers and removes them from a directory the agent makes its user's (the
// agent reads that user from the pod, so runAsUser is set here).
func defaultHelper(image string) helperSettings {
	return helperSettings{
		Image:    image,
		Deadline: restorewait.DefaultDeadline,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](65534),
			RunAsGroup:               ptr.To[int64](65534),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// helperFromConfigMap applies the ConfigMap's keys (image, cpuRequest, memRequest,
// cpuLimit, memLimit, secCtxRunAsUser, secCtxRunAsGroup, secCtxAllowPrivilegeEscalation,
// secCtx, deadline) over the defaults. A value that does not parse keeps the default and gives a
// warning naming the key, so a typo never blocks a pod or silently drops its restore.
// secCtx is a whole securityContext in YAML or JSON and replaces the default one; the
// secCtx* keys then adjust it.
func helperFromConfigMap(cm *corev1.ConfigMap, image string) (helperSettings, []string) {
	h := defaultHelper(image)
	if cm == nil {
		return h, nil
	}
	var warnings []string
	warn := func(key string, err error) {
		warnings = append(warnings, fmt.Sprintf("ConfigMap %s key %s ignored: %v", HelperConfigMapName, key, err))
	}
	d := cm.Data
	if v := d["image"]; v != "" {
		h.Image = v
	}
	for key, set := range map[string]struct {
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		"cpuRequest": {&h.Resources.Requests, corev1.ResourceCPU},
		"memRequest": {&h.Resources.Requests, corev1.ResourceMemory},
		"cpuLimit":   {&h.Resources.Limits, corev1.ResourceCPU},
		"memLimit":   {&h.Resources.Limits, corev1.ResourceMemory},
	} {
		v, ok := d[key]
		if !ok {
			continue
		}
		if v == "" || v == "0" {
			// An empty or zero value removes the request or limit.
			delete(*set.list, set.name)
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			warn(key, err)
			continue
		}
		(*set.list)[set.name] = q
	}
	if v := d["secCtx"]; v != "" {
		var sc corev1.SecurityContext
		if err := yaml.UnmarshalStrict([]byte(v), &sc); err != nil {
			warn("secCtx", err)
		} else {
			h.SecurityContext = &sc
		}
	}
	for key, field := range map[string]**int64{"secCtxRunAsUser": &h.SecurityContext.RunAsUser, "secCtxRunAsGroup": &h.SecurityContext.RunAsGroup} {
		if v := d[key]; v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				warn(key, fmt.Errorf("%q is not a user or group ID", v))
				continue
			}
			*field = ptr.To(n)
			if key == "secCtxRunAsUser" && n == 0 {
				h.SecurityContext.RunAsNonRoot = nil
			}
		}
	}
	if v := d["secCtxAllowPrivilegeEscalation"]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			warn("secCtxAllowPrivilegeEscalation", err)
		} else {
			h.SecurityContext.AllowPrivilegeEscalation = ptr.To(b)
		}
	}
	if v, ok := d["deadline"]; ok {
		// A Go duration (90m, 6h); "0" or empty waits without a limit.
		switch dl, err := time.ParseDuration(v); {
		case v == "" || v == "0":
			h.Deadline = 0
		case err != nil:
			warn("deadline", err)
		case dl < 0:
			warn("deadline", fmt.Errorf("%q is negative", v))
		default:
			h.Deadline = dl
		}
	}
	sort.Strings(warnings)
	return h, warnings
}

// HelperPod is how the manager's own small pods (the reader pods that back up claims
// no pod uses) look: the restore helper's image, resources and security context, and
// the tolerations and priority class of the ConfigMap's readerTolerations and
// readerPriorityClassName keys.
type HelperPod struct {
	Image             string
	Resources         corev1.ResourceRequirements
	SecurityContext   *corev1.SecurityContext
	Tolerations       []corev1.Toleration
	PriorityClassName string
}

// HelperPodFromConfigMap reads a HelperPod from ConfigMap cm (nil: the defaults) with
// image as the default image. A value that does not parse keeps the default and gives
// a warning naming the key.
func HelperPodFromConfigMap(cm *corev1.ConfigMap, image string) (HelperPod, []string) {
	h, warnings := helperFromConfigMap(cm, image)
	out := HelperPod{Image: h.Image, Resources: h.Resources, SecurityContext: h.SecurityContext}
	if cm == nil {
		return out, warnings
	}
	if v := cm.Data["readerTolerations"]; v != "" {
		var tolerations []corev1.Toleration
		if err := yaml.UnmarshalStrict([]byte(v), &tolerations); err != nil {
			warnings = append(warnings, fmt.Sprintf("ConfigMap %s key readerTolerations ignored: %v", HelperConfigMapName, err))
		} else {
			out.Tolerations = tolerations
		}
	}
	out.PriorityClassName = cm.Data["readerPriorityClassName"]
	return out, warnings
}

// ReadHelperPod reads the HelperPod of the ConfigMap HelperConfigMapName in the
// operator namespace through r (uncached: the manager does not watch ConfigMaps);
// image is the default image ("holdfast:dev" when empty). No namespace or reader:
// the defaults. A value that does not parse keeps the default; the warnings say which.
func ReadHelperPod(ctx context.Context, r client.Reader, namespace, image string) (HelperPod, []string, error) {
	var cm *corev1.ConfigMap
	if namespace != "" && r != nil {
		cm = &corev1.ConfigMap{}
		err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: HelperConfigMapName}, cm)
		if apierrors.IsNotFound(err) {
			cm = nil
		} else if err != nil {
			return HelperPod{}, nil, fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, HelperConfigMapName, err)
		}
	}
	if image == "" {
		image = "holdfast:dev"
	}
	h, warnings := HelperPodFromConfigMap(cm, image)
	return h, warnings, nil
}
