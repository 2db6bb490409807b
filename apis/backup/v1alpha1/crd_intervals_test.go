package v1alpha1_test

import (
	"strings"
	"testing"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestIntervalsHaveAFloor (review L1): a maintenance interval under 5m or a probe
// interval under 30s is rejected; the floors themselves are accepted.
func TestIntervalsHaveAFloor(t *testing.T) {
	env := testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := func(interval string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: BackupRepository\nmetadata: {name: r-" + strings.ReplaceAll(interval, ".", "") + ", namespace: " + ns + "}\n" +
			"spec: {storageLocation: default, uploader: restic, maintenanceInterval: " + interval + "}\n"
	}
	bsl := func(interval string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: BackupStorageLocation\nmetadata: {name: " + ns + "-" + strings.ReplaceAll(interval, ".", "") + "}\n" +
			"spec: {filesystem: {path: /backups}, probeInterval: " + interval + "}\n"
	}
	for _, tc := range []struct {
		name, manifest, want string
	}{
		{"maintenance every second", repo("1s"), "maintenanceInterval must be at least 5m"},
		{"maintenance every 4m59s", repo("4m59s"), "maintenanceInterval must be at least 5m"},
		{"maintenance every 5m", repo("5m"), ""},
		{"probe every second", bsl("1s"), "probeInterval must be at least 30s"},
		{"probe every 30s", bsl("30s"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := decode(t, tc.manifest)
			err := env.Client.Create(ctxFor(t), obj)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				t.Cleanup(func() { _ = env.Client.Delete(ctxFor(t), obj) })
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a rejection saying %q", err, tc.want)
			}
		})
	}
}
