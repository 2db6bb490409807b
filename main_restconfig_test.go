package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A manager or agent started with --kubeconfig (out of cluster, as the control-plane
// bench and a developer run it) must talk to the API server at the same rate as one
// started in the cluster: no client-side limit, API priority and fairness decides.
// client-go's default for a QPS of 0 is 5 requests a second with a burst of 10, which
// made 10,000 creates take over half an hour.
func TestRestConfigHasNoClientSideLimitOnEitherPath(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
users:
- name: u
  user:
    token: t
contexts:
- name: c
  context:
    cluster: c
    user: u
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}

	flagCfg, err := (&commonFlags{kubeconfig: kubeconfig}).restConfig()
	if err != nil {
		t.Fatalf("--kubeconfig: %v", err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	defaultCfg, err := (&commonFlags{}).restConfig()
	if err != nil {
		t.Fatalf("$KUBECONFIG: %v", err)
	}
	if flagCfg.QPS != defaultCfg.QPS || flagCfg.Burst != defaultCfg.Burst {
		t.Errorf("--kubeconfig gives QPS %v burst %d, the default path QPS %v burst %d: the two must limit alike",
			flagCfg.QPS, flagCfg.Burst, defaultCfg.QPS, defaultCfg.Burst)
	}
	if flagCfg.QPS >= 0 {
		t.Errorf("--kubeconfig gives QPS %v: a client-side limit (client-go turns 0 into 5 requests a second); want it off (negative)", flagCfg.QPS)
	}
}
