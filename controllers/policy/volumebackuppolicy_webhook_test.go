package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The API server calls the webhook over TLS and rejects a policy whose selector or
// schedule is wrong, with the field path and the compiler's message.
func TestWebhookRejectsInvalidPolicies(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	tests := []struct {
		name   string
		mutate func(*v1.VolumeBackupPolicy)
		want   []string
	}{
		{"misspelt field", func(p *v1.VolumeBackupPolicy) { p.Spec.Selector.Volumes = `pvc.spec.storageClasName == "fast"` },
			[]string{"spec.selector.volumes", "undefined field 'storageClasName'", "<input>:1:9"}},
		{"namespace selector not bool", func(p *v1.VolumeBackupPolicy) { p.Spec.Selector.Namespaces = `namespace.metadata.name` },
			[]string{"spec.selector.namespaces", "must return bool, but returns string"}},
		{"too costly", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Selector.Volumes = `pod.spec.containers.all(c, pod.spec.containers.all(d, c.env.all(x, d.env.exists(y, x.name == y.name))))`
		}, []string{"spec.selector.volumes", "estimated worst-case cost"}},
		// The coverage exclusion is compiled and limited as the selector is (issue 17).
		{"coverage exclusion misspelt", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Coverage = &v1.CoverageSpec{Exclude: `volume.emptyDri != null`}
		}, []string{"spec.coverage.exclude", "undefined field 'emptyDri'"}},
		{"coverage exclusion too costly", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Coverage = &v1.CoverageSpec{Exclude: `pod.spec.containers.all(c, pod.spec.containers.all(d, c.env.all(x, d.env.exists(y, x.name == y.name))))`}
		}, []string{"spec.coverage.exclude", "estimated worst-case cost"}},
		// A hook's pods expression is compiled like the selector and its error names
		// the hook's field (issue 19).
		{"hook pods misspelt", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Hooks = []v1.BackupHook{
				{Name: "ok", Pre: &v1.HookCommand{Command: []string{"true"}}},
				{Name: "bad", Pods: `pod.metadata.lables["app"] == "db"`, Pre: &v1.HookCommand{Command: []string{"true"}}},
			}
		}, []string{"spec.hooks[1].pods", "undefined field 'lables'"}},
		{"hook pods sees no volume", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Hooks = []v1.BackupHook{{Name: "bad", Pods: `volume.name == "data"`, Post: &v1.HookCommand{Command: []string{"true"}}}}
		}, []string{"spec.hooks[0].pods", "undeclared reference to 'volume'"}},
		{"unknown time zone", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Schedule = &v1.Schedule{Cron: "0 2 * * *", TimeZone: "Mars/Olympus_Mons"}
		},
			[]string{"spec.schedule", "unknown time zone"}},
		{"bad cron", func(p *v1.VolumeBackupPolicy) { p.Spec.Schedule = &v1.Schedule{Cron: "0 25 * * *"} },
			[]string{"spec.schedule", "cron"}},
		// A jitter longer than the interval between ticks would leave the volumes whose
		// offset comes after the next tick never backed up (review H5).
		{"jitter longer than the interval", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Schedule = &v1.Schedule{Cron: "0 * * * *", Jitter: &metav1.Duration{Duration: 2 * time.Hour}}
		}, []string{"spec.schedule.jitter", "2h0m0s", "must be at most 59m0s", "the shortest interval between ticks of \"0 * * * *\" is 1h0m0s"}},
		{"jitter leaving no minute of retries", func(p *v1.VolumeBackupPolicy) {
			p.Spec.Schedule = &v1.Schedule{Cron: "*/15 * * * 1-5", Jitter: &metav1.Duration{Duration: 15 * time.Minute}}
		}, []string{"spec.schedule.jitter", "must be at most 14m0s", "is 15m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPolicy("invalid-"+strings.ReplaceAll(tt.name, " ", "-"), "none")
			tt.mutate(p)
			err := e.Client.Create(ctx, p)
			if err == nil {
				_ = e.Client.Delete(ctx, p)
				t.Fatal("the API server accepted the policy")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "admission webhook") {
				t.Fatalf("error %v is not the webhook's rejection", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// A valid policy is admitted.
	p := newPolicy("valid-"+e.Namespace(t, nil), "none")
	p.Spec.Selector.Volumes = `volume.name in pod.metadata.annotations[?"backup.velero.io/backup-volumes"].orValue("").split(",")`
	p.Spec.Schedule = &v1.Schedule{Cron: "0 2 * * *", TimeZone: "America/New_York", Jitter: &metav1.Duration{Duration: 6 * time.Hour}}
	p.Spec.Coverage = &v1.CoverageSpec{Exclude: `has(volume.emptyDir) && volume.name == "cache"`}
	if err := e.Client.Create(ctx, p); err != nil {
		t.Fatalf("a valid policy was rejected: %v", err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), p) })
}

// A policy that got in while the webhook was down is Stalled with the field path and
// the compiler's message, kstatus reads it as Failed, and nothing is backed up.
func TestInvalidPolicyThatGotInIsStalled(t *testing.T) {
	e := startManager(t)
	ctx := t.Context()
	ns := e.Namespace(t, nil)
	w := &workload{t: t, e: e, ctx: ctx, ns: ns}
	w.pod("app", "node-a", "Running", nil, emptyDir("data"))

	p := newPolicy("stalled-"+ns, ns)
	p.Spec.Selector.Volumes = `volume.nmae == "data"`
	p.Annotations = map[string]string{v1.AnnotationRunNow: "now"}
	withoutWebhook(t, e, ctx, func() error { return e.Client.Create(ctx, p) })
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), p) })

	eventually(t, "Stalled", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		stalled := meta(p, v1.ConditionStalled)
		if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != ReasonInvalidSelector {
			return fmt.Errorf("conditions %+v", p.Status.Conditions)
		}
		for _, want := range []string{"spec.selector.volumes", "undefined field 'nmae'"} {
			if !strings.Contains(stalled.Message, want) {
				return fmt.Errorf("Stalled message %q does not contain %q", stalled.Message, want)
			}
		}
		return nil
	})
	if res := kstatusOf(t, p); res.Status != status.FailedStatus {
		t.Errorf("kstatus = %s (%s), want Failed", res.Status, res.Message)
	}
	if p.Status.LastRun != nil || p.Status.LastRunNowToken != "" {
		t.Errorf("a stalled policy ran: %+v", p.Status)
	}
	if n := len(backupsOf(t, e, ctx, ns, client.MatchingLabels{v1.LabelPolicy: p.Name})); n != 0 {
		t.Errorf("a stalled policy created %d backups", n)
	}

	// The user fixes the expression (the webhook is back and admits it): Ready, Current.
	patch := client.MergeFrom(p.DeepCopy())
	p.Spec.Selector.Volumes = `volume.name == "data"`
	if err := e.Client.Patch(ctx, p, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ready after the fix", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		if res := kstatusOf(t, p); res.Status != status.CurrentStatus || p.Status.SelectedVolumes != 1 {
			return fmt.Errorf("kstatus %s (%s), %d volumes", res.Status, res.Message, p.Status.SelectedVolumes)
		}
		return nil
	})
}

func meta(p *v1.VolumeBackupPolicy, typ string) *metav1.Condition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// withoutWebhook removes the policy webhook's configuration, runs create until the API
// server (which notices the removal asynchronously) lets it through, and puts the
// configuration back, waiting until the webhook rejects again.
func withoutWebhook(t *testing.T, e *testenv.Env, ctx context.Context, create func() error) {
	t.Helper()
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := e.Client.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	var saved *admissionregistrationv1.ValidatingWebhookConfiguration
	for i := range list.Items {
		for _, wh := range list.Items[i].Webhooks {
			if wh.Name == "vvolumebackuppolicy.holdfast.dev" {
				saved = list.Items[i].DeepCopy()
			}
		}
	}
	if saved == nil {
		t.Fatal("the policy webhook is not installed")
	}
	if err := e.Client.Delete(ctx, saved); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		saved.ResourceVersion, saved.UID = "", ""
		if err := e.Client.Create(context.Background(), saved); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Errorf("reinstalling the webhook: %v", err)
			return
		}
		probe := newPolicy("probe-webhook-back", "none")
		probe.Spec.Selector.Volumes = "1"
		eventually(t, "the webhook to reject again", func() error {
			err := e.Client.Create(context.Background(), probe, client.DryRunAll)
			if err == nil {
				return fmt.Errorf("an invalid policy is still admitted")
			}
			return nil
		})
	}
	defer restore()
	eventually(t, "the API server to admit without the webhook", create)
}
