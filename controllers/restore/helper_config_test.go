package restore

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
)

func TestHelperFromConfigMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  map[string]string
		check func(t *testing.T, h helperSettings)
		warn  string
	}{
		{"no ConfigMap keys keep the defaults", map[string]string{}, func(t *testing.T, h helperSettings) {
			if h.Image != "holdfast:dev" || *h.SecurityContext.RunAsUser != 65534 || h.Resources.Limits.Memory().String() != "64Mi" {
				t.Errorf("defaults changed: %+v", h)
			}
		}, ""},
		{"user, group and escalation keys", map[string]string{"secCtxRunAsUser": "1000", "secCtxRunAsGroup": "2000", "secCtxAllowPrivilegeEscalation": "true"},
			func(t *testing.T, h helperSettings) {
				sc := h.SecurityContext
				if *sc.RunAsUser != 1000 || *sc.RunAsGroup != 2000 || !*sc.AllowPrivilegeEscalation {
					t.Errorf("securityContext %+v", sc)
				}
			}, ""},
		{"root user drops runAsNonRoot", map[string]string{"secCtxRunAsUser": "0"}, func(t *testing.T, h helperSettings) {
			if *h.SecurityContext.RunAsUser != 0 || h.SecurityContext.RunAsNonRoot != nil {
				t.Errorf("securityContext %+v", h.SecurityContext)
			}
		}, ""},
		{"whole secCtx replaces the default", map[string]string{"secCtx": "runAsUser: 7\ncapabilities: {drop: [ALL]}"}, func(t *testing.T, h helperSettings) {
			if *h.SecurityContext.RunAsUser != 7 || h.SecurityContext.RunAsGroup != nil {
				t.Errorf("securityContext %+v", h.SecurityContext)
			}
		}, ""},
		{"empty limit removes it", map[string]string{"cpuLimit": ""}, func(t *testing.T, h helperSettings) {
			if _, ok := h.Resources.Limits[corev1.ResourceCPU]; ok {
				t.Error("cpu limit still set")
			}
		}, ""},
		{"bad secCtx keeps the default and warns", map[string]string{"secCtx": "runAsUser: me"}, func(t *testing.T, h helperSettings) {
			if *h.SecurityContext.RunAsUser != 65534 {
				t.Errorf("securityContext %+v", h.SecurityContext)
			}
		}, "key secCtx ignored"},
		{"no deadline key: restore-wait gives up after the default", map[string]string{}, func(t *testing.T, h helperSettings) {
			if h.Deadline != restorewait.DefaultDeadline {
				t.Errorf("deadline %s, want %s", h.Deadline, restorewait.DefaultDeadline)
			}
		}, ""},
		{"deadline key", map[string]string{"deadline": "90m"}, func(t *testing.T, h helperSettings) {
			if h.Deadline != 90*time.Minute {
				t.Errorf("deadline %s", h.Deadline)
			}
		}, ""},
		{"deadline 0 waits without a limit", map[string]string{"deadline": "0"}, func(t *testing.T, h helperSettings) {
			if h.Deadline != 0 {
				t.Errorf("deadline %s", h.Deadline)
			}
		}, ""},
		{"bad deadline keeps the default and warns", map[string]string{"deadline": "a day"}, func(t *testing.T, h helperSettings) {
			if h.Deadline != restorewait.DefaultDeadline {
				t.Errorf("deadline %s", h.Deadline)
			}
		}, "key deadline ignored"},
		{"negative user warns", map[string]string{"secCtxRunAsUser": "-1"}, func(t *testing.T, h helperSettings) {}, `key secCtxRunAsUser ignored: "-1" is not a user or group ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, warnings := helperFromConfigMap(&corev1.ConfigMap{Data: tc.data}, "holdfast:dev")
			tc.check(t, h)
			got := strings.Join(warnings, "\n")
			if (tc.warn == "") != (got == "") || !strings.Contains(got, tc.warn) {
				t.Errorf("warnings %q, want %q", got, tc.warn)
			}
		})
	}
}

// The reader pods of claims no pod uses take the helper's container settings and the
// ConfigMap's readerTolerations and readerPriorityClassName; tolerations that do not
// parse keep none and say which key.
func TestHelperPodFromConfigMap(t *testing.T) {
	cm := &corev1.ConfigMap{Data: map[string]string{
		"image":                   "registry.example/holdfast:1",
		"memLimit":                "32Mi",
		"readerTolerations":       "- key: dedicated\n  operator: Equal\n  value: storage\n  effect: NoSchedule\n",
		"readerPriorityClassName": "backup-low",
	}}
	h, warnings := HelperPodFromConfigMap(cm, "holdfast:dev")
	if len(warnings) != 0 || h.Image != "registry.example/holdfast:1" || h.PriorityClassName != "backup-low" ||
		len(h.Tolerations) != 1 || h.Tolerations[0].Key != "dedicated" || h.Tolerations[0].Effect != corev1.TaintEffectNoSchedule ||
		h.Resources.Limits.Memory().String() != "32Mi" || h.SecurityContext == nil || !*h.SecurityContext.RunAsNonRoot {
		t.Errorf("got %+v, warnings %v", h, warnings)
	}
	h, warnings = HelperPodFromConfigMap(&corev1.ConfigMap{Data: map[string]string{"readerTolerations": "key: not-a-list"}}, "holdfast:dev")
	if len(h.Tolerations) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "readerTolerations") || h.Image != "holdfast:dev" {
		t.Errorf("got %+v, warnings %v; want no tolerations and a warning naming the key", h, warnings)
	}
}
