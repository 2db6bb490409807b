package agent_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	admissionv1 "k8s.io/api/admissionregistration/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestRestoresOfAnotherNamespaceNeedItsGrant is a tenant trying to read another
// namespace's backup (review H1): snapshot IDs are not secret, so a namespace admin
// can write a PodVolumeRestore naming the victim's namespace, repository and a real
// snapshot. Whatever the shape of the object, the agent gets no key unless the restore
// belongs to a VolumeRestore of its namespace that restores from the victim with the
// victim's grant, and nothing is written into the attacker's volume.
func TestRestoresOfAnotherNamespaceNeedItsGrant(t *testing.T) {
	testenv.Require(t, env)
	ctx := ctxFor(t)
	victim := env.Namespace(t, nil)
	attacker := env.Namespace(t, nil)
	repo := ensureRepository(t, victim, "fs", v1.UploaderKopia)
	src := newVolume(t, victim, "db")
	if err := os.WriteFile(filepath.Join(src.dir, "secret"), []byte("the victim's data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backup := waitBackupPhase(t, createBackup(t, src, "db", "fs", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed)
	if backup.Status.Phase != v1.RunCompleted {
		t.Fatalf("victim's backup %s: %s", backup.Status.Phase, backup.Status.Message)
	}
	snapshot := backup.Status.SnapshotID

	restoreFrom := func(t *testing.T, name, vrSource string, owned bool, pvrSource string) (*v1.PodVolumeRestore, volume) {
		t.Helper()
		dst := newVolume(t, attacker, name)
		vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: attacker},
			Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "none"}},
				SourceNamespace: vrSource, Source: &v1.RestoreSource{Latest: true}}}
		if err := env.Client.Create(ctx, vr); err != nil {
			t.Fatal(err)
		}
		pvr := &v1.PodVolumeRestore{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: attacker},
			Spec: v1.PodVolumeRestoreSpec{Node: nodeName, Pod: v1.PodReference{Name: dst.pod, UID: string(dst.uid)}, Volume: dst.name,
				VolumeRestore: name, SnapshotID: snapshot, SourceNamespace: pvrSource, SourcePath: backup.Spec.SourcePath,
				StorageLocation: "fs", Repository: repo, Uploader: v1.UploaderKopia},
		}
		if owned {
			if err := controllerutil.SetControllerReference(vr, pvr, env.Scheme); err != nil {
				t.Fatal(err)
			}
		}
		if err := env.Client.Create(ctx, pvr); err != nil {
			t.Fatal(err)
		}
		return pvr, dst
	}
	for _, tc := range []struct {
		name, vrSource string
		owned          bool
		want           string
	}{
		// Made by hand: no VolumeRestore owns it.
		{"hand-made", victim, false, "was not created by the restore controller"},
		// Its VolumeRestore restores from the attacker's own namespace.
		{"other-source", "", true, "but its VolumeRestore restores from " + attacker},
		// A VolumeRestore of the victim's namespace, which never granted it.
		{"not-granted", victim, true, "does not allow restores into " + attacker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pvr, dst := restoreFrom(t, tc.name, tc.vrSource, tc.owned, victim)
			got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed)
			if got.Status.Phase != v1.RunFailed || !strings.Contains(got.Status.Message, tc.want) {
				t.Errorf("restore %s: %q; want Failed saying %q", got.Status.Phase, got.Status.Message, tc.want)
			}
			if entries, _ := os.ReadDir(dst.dir); len(entries) != 0 {
				t.Errorf("%d entries were written into the attacker's volume", len(entries))
			}
		})
	}
	// With the victim's grant, the same restore works: the check is the grant, not
	// the shape of the request.
	t.Run("granted", func(t *testing.T) {
		ns := &corev1.Namespace{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: victim}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Annotations = map[string]string{v1.AnnotationRestoreInto: attacker}
		if err := env.Client.Update(ctx, ns); err != nil {
			t.Fatal(err)
		}
		pvr, dst := restoreFrom(t, "granted", victim, true, victim)
		got := waitRestorePhase(t, pvr, v1.RunCompleted, v1.RunFailed)
		if got.Status.Phase != v1.RunCompleted {
			t.Fatalf("granted restore %s: %s", got.Status.Phase, got.Status.Message)
		}
		if b, err := os.ReadFile(filepath.Join(dst.dir, "secret")); err != nil || string(b) != "the victim's data\n" {
			t.Errorf("granted restore wrote %q (%v), want the victim's file", b, err)
		}
	})
}

// TestManagerHandsKeysOnlyToTheAgentOfTheJobsNode asks the manager for job credentials
// the way an agent does, with tokens it must refuse (review H2).
func TestManagerHandsKeysOnlyToTheAgentOfTheJobsNode(t *testing.T) {
	testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)
	elsewhere := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "node-2", Pod: v1.PodReference{Name: "p", UID: "u"}, Volume: "data",
			SourcePath: "/pod/p/data", StorageLocation: "fs", Repository: "fs-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	agentToken, err := os.ReadFile(fx.managerToken)
	if err != nil {
		t.Fatal(err)
	}
	// A token of the agent's ServiceAccount that is not bound to a pod (as a stolen
	// long-lived token would be), and one of another ServiceAccount bound to a pod
	// on node-1.
	unbound := tokenFor(t, operatorNamespace, agentServiceAccount, nil)
	other := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "intruder", Namespace: ns}}
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "intruder", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: other.Name, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	intruder := tokenFor(t, ns, other.Name, pod)

	req := jobcredentials.Request{Kind: jobcredentials.KindBackup, Namespace: ns, Name: elsewhere.Name, UID: elsewhere.UID}
	for _, tc := range []struct {
		name, token string
		req         jobcredentials.Request
		want        string
	}{
		{"no token", "", req, "carries no ServiceAccount token"},
		{"another ServiceAccount", intruder, req, "is not the agent's ServiceAccount"},
		{"token not bound to a node", unbound, req, "not bound to a pod on a node"},
		{"another node's backup", string(agentToken), req, "belongs to node node-2; the agent of node node-1 may not"},
		{"a replaced backup", string(agentToken), jobcredentials.Request{Kind: req.Kind, Namespace: ns, Name: req.Name, UID: "someone-else"}, "was replaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := askManager(t, tc.token, tc.req)
			if status != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Errorf("got %d %q; want 403 saying %q", status, body, tc.want)
			}
			if strings.Contains(body, "password") {
				t.Errorf("a refusal carries key material: %s", body)
			}
		})
	}
}

// tokenFor requests a token for the manager's audience, bound to pod when given.
func tokenFor(t *testing.T, ns, sa string, pod *corev1.Pod) string {
	t.Helper()
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{jobcredentials.Audience}, ExpirationSeconds: ptr.To(int64(3600))}}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	if err := env.Client.SubResource("token").Create(ctxFor(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// askManager posts a job credentials request as an agent would.
func askManager(t *testing.T, token string, req jobcredentials.Request) (int, string) {
	t.Helper()
	cfg := &admissionv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: managerWebhookConfigName}, cfg); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctxFor(t), http.MethodPost, fx.managerURL+jobcredentials.Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
