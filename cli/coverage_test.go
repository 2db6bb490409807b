package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// coverage lists every volume of a namespace with its state, the policy and the last
// backup that completed, as a table and as JSON, and the manager's VolumeCoverage
// beside it; -A adds the namespace column and --unprotected-only filters.
func TestCoverageListsEveryVolume(t *testing.T) {
	o := newObjects(t)
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	o.app(ns, "web")
	name := "coverage-" + ns
	o.policy(name, fmt.Sprintf("namespace.metadata.name == %q", ns))
	done := metav1.NewTime(time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC))
	pvb := &v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: "web-data-1", Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "node-a", Pod: v1.PodReference{Name: "web", UID: "web-uid"}, Volume: "data", ClaimName: "web-data",
			SourcePath: "/pvc/web-data", StorageLocation: "default", Repository: "default-" + ns, Uploader: v1.UploaderKopia}}
	o.create(pvb)
	pvb.Status.Phase, pvb.Status.CompletionTime = v1.RunCompleted, &done
	if err := e.Client.Status().Update(t.Context(), pvb); err != nil {
		t.Fatal(err)
	}

	var res CoverageResult
	testenv.Eventually(t, "the manager's VolumeCoverage", func() error {
		out, stderr, code := holdfast(t, "", "coverage", "-n", ns, "-o", "json")
		if code != ExitOK {
			return fmt.Errorf("exit %d: %s", code, stderr)
		}
		res = CoverageResult{}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		if res.Summary == nil || res.Summary.Computed == nil {
			return fmt.Errorf("no VolumeCoverage summary yet")
		}
		return nil
	})
	if len(res.Volumes) != 2 {
		t.Fatalf("volumes %+v, want the claim and the emptyDir", res.Volumes)
	}
	claim, cache := res.Volumes[0], res.Volumes[1]
	if claim.Source == "/pod/web/cache" {
		claim, cache = cache, claim
	}
	if claim.Claim != "web-data" || claim.State != v1.CoverageProtected || claim.Policy != name ||
		claim.LastSuccess == nil || !claim.LastSuccess.Equal(done.Time) {
		t.Errorf("claim %+v, want Protected by %s, last success %s", claim, name, done.Time)
	}
	if cache.Source != "/pod/web/cache" || cache.State != v1.CoverageUnprotected || cache.LastSuccess != nil {
		t.Errorf("emptyDir %+v, want Unprotected", cache)
	}

	out, stderr, code := holdfast(t, "", "coverage", "-n", ns)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	wantLines(t, out,
		"SOURCE CLAIM VOLUME TYPE POD STATE POLICY REASON LAST SUCCESS",
		fmt.Sprintf("/pvc/web-data web-data data persistentVolumeClaim web Protected %s - 2026-12-01T02:00:00Z", name),
		"/pod/web/cache - cache emptyDir web Unprotected - - -",
		"VolumeCoverage cluster (all namespaces, computed")

	out, stderr, code = holdfast(t, "", "coverage", "-A", "--unprotected-only")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	wantLines(t, out, "NAMESPACE SOURCE", ns+" /pod/web/cache - cache emptyDir web Unprotected")
	if strings.Contains(out, "/pvc/web-data") {
		t.Errorf("--unprotected-only lists a protected claim:\n%s", out)
	}
}
