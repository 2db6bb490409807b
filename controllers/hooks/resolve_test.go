package hooks

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func annotatedPod(annotations map[string]string) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}, {Name: "sidecar", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "db"}, {Name: "exporter"}},
		},
	}
}

// The Velero annotations are read with Velero's semantics, and a malformed one is an
// error naming it, never ignored.
func TestFromAnnotations(t *testing.T) {
	const pre = "pre.hook.backup.velero.io/"
	const post = "post.hook.backup.velero.io/"
	tests := []struct {
		name    string
		ann     map[string]string
		wantPre *v1.ResolvedHook
		wantErr string
	}{
		{"JSON array, defaults", map[string]string{pre + "command": `["/bin/sh", "-c", "sync"]`},
			&v1.ResolvedHook{Name: "pre", Source: "annotations", Container: "db", Command: []string{"/bin/sh", "-c", "sync"},
				Timeout: metav1.Duration{Duration: 30 * time.Second}, OnError: v1.HookFail}, ""},
		{"plain string is one argument", map[string]string{pre + "command": "/usr/local/bin/freeze"},
			&v1.ResolvedHook{Name: "pre", Source: "annotations", Container: "db", Command: []string{"/usr/local/bin/freeze"},
				Timeout: metav1.Duration{Duration: 30 * time.Second}, OnError: v1.HookFail}, ""},
		{"every key", map[string]string{pre + "command": `["fsfreeze"]`, pre + "container": "exporter", pre + "on-error": "Continue", pre + "timeout": "2m"},
			&v1.ResolvedHook{Name: "pre", Source: "annotations", Container: "exporter", Command: []string{"fsfreeze"},
				Timeout: metav1.Duration{Duration: 2 * time.Minute}, OnError: v1.HookContinue}, ""},
		{"native sidecar allowed", map[string]string{pre + "command": `["x"]`, pre + "container": "sidecar"},
			&v1.ResolvedHook{Name: "pre", Source: "annotations", Container: "sidecar", Command: []string{"x"},
				Timeout: metav1.Duration{Duration: 30 * time.Second}, OnError: v1.HookFail}, ""},
		{"Velero's legacy pre hook without a phase", map[string]string{"hook.backup.velero.io/command": `["sync"]`, "hook.backup.velero.io/container": "exporter"},
			&v1.ResolvedHook{Name: "pre", Source: "annotations", Container: "exporter", Command: []string{"sync"},
				Timeout: metav1.Duration{Duration: 30 * time.Second}, OnError: v1.HookFail}, ""},
		{"bad JSON", map[string]string{pre + "command": `["fsfreeze", ]`}, nil, pre + "command"},
		{"empty array", map[string]string{pre + "command": `[]`}, nil, pre + "command"},
		{"bad on-error", map[string]string{pre + "command": `["x"]`, pre + "on-error": "Ignore"}, nil, pre + `on-error is "Ignore": it must be Fail or Continue`},
		{"bad timeout", map[string]string{pre + "command": `["x"]`, pre + "timeout": "30"}, nil, pre + `timeout is "30"`},
		{"unknown container", map[string]string{pre + "command": `["x"]`, pre + "container": "nope"}, nil, pre + `container: pod db-0 has no container "nope"`},
		{"init container that is not a sidecar", map[string]string{pre + "command": `["x"]`, pre + "container": "init"}, nil, "not a native sidecar"},
		{"container without command", map[string]string{post + "container": "db"}, nil, post + "container is set but " + post + "command is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromAnnotations(annotatedPod(tt.ann))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Pre) != 1 || len(got.Post) != 0 {
				t.Fatalf("hooks = %+v, want one pre hook", got)
			}
			if g, w := got.Pre[0], *tt.wantPre; g.Name != w.Name || g.Source != w.Source || g.Container != w.Container ||
				strings.Join(g.Command, "|") != strings.Join(w.Command, "|") || g.Timeout != w.Timeout || g.OnError != w.OnError {
				t.Errorf("pre hook = %+v, want %+v", g, w)
			}
		})
	}
}

// A pod with Velero annotations runs those and none of the policy's hooks, as in
// Velero; others run the policy hooks their pods expression matches, in order.
func TestResolvePrecedence(t *testing.T) {
	policy := []v1.BackupHook{
		{Name: "flush", Container: "db", Pre: &v1.HookCommand{Command: []string{"flush"}, OnError: v1.HookContinue}},
		{Name: "other", Pre: &v1.HookCommand{Command: []string{"never"}}},
		{Name: "sidecar", Container: "sidecar", Post: &v1.HookCommand{Command: []string{"resume"}, Timeout: &metav1.Duration{Duration: time.Minute}}},
	}
	match := func(i int) (bool, error) { return i != 1, nil }

	annotated := annotatedPod(map[string]string{"pre.hook.backup.velero.io/command": `["velero-pre"]`})
	got, err := Resolve(annotated, policy, match)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pre) != 1 || got.Pre[0].Command[0] != "velero-pre" || got.Pre[0].Source != v1.HookSourceAnnotations || len(got.Post) != 0 {
		t.Errorf("annotated pod hooks = %+v, want only its annotation's pre hook", got)
	}

	got, err = Resolve(annotatedPod(nil), policy, match)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pre) != 1 || got.Pre[0].Name != "flush" || got.Pre[0].Source != "flush" || got.Pre[0].OnError != v1.HookContinue ||
		got.Pre[0].Timeout.Duration != DefaultTimeout {
		t.Errorf("pre hooks = %+v, want flush with Continue and the default timeout", got.Pre)
	}
	if len(got.Post) != 1 || got.Post[0].Container != "sidecar" || got.Post[0].Timeout.Duration != time.Minute || got.Post[0].OnError != v1.HookFail {
		t.Errorf("post hooks = %+v, want the sidecar's resume with 1m and Fail", got.Post)
	}

	if got, err := Resolve(annotatedPod(nil), policy, func(int) (bool, error) { return false, nil }); err != nil || got != nil {
		t.Errorf("no hook matching: got %+v, %v; want nil, nil", got, err)
	}
	bad := []v1.BackupHook{{Name: "typo", Container: "dbb", Pre: &v1.HookCommand{Command: []string{"x"}}}}
	if _, err := Resolve(annotatedPod(nil), bad, match); err == nil || !strings.Contains(err.Error(), `hook typo (spec.hooks[0].container): pod db-0 has no container "dbb"`) {
		t.Errorf("unknown container: error = %v", err)
	}
}
