package controlplane

import (
	"slices"
	"testing"
)

// The bench's manager runs with the Go settings of the manager's Deployment.
func TestDeploymentGoEnv(t *testing.T) {
	env, err := deploymentGoEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GOGC=50", "GOMEMLIMIT=1073741824"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %q lacks %s (config/manager/manager.yaml)", env, want)
		}
	}
}
