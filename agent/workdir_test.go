package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// A data mover killed with its agent leaves its job directory behind, and the kopia
// config in it holds the store's credentials; the next agent process removes it before
// it starts work (review L5), and leaves alone what is not a job's.
func TestAgentRemovesLeftoverJobDirectories(t *testing.T) {
	work := t.TempDir()
	config := filepath.Join(work, jobDirPrefix+"1234", "repo-x", "repository.config")
	if err := os.MkdirAll(filepath.Dir(config), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(`{"storage":{"config":{"secretAccessKey":"leaked"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(work, "not-a-job")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeStaleJobs(work); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(config))); !os.IsNotExist(err) {
		t.Errorf("the leftover job directory is still there (%v)", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("removed something that is not a job directory: %v", err)
	}
}
