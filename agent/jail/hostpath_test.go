package jail_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-dev/holdfast/agent/jail"
)

func init() { roles["enter"] = enterRole }

// enterRole enters the jail and says how that went: "entered", or the error.
func enterRole(spec jail.Spec, _ string, _ *bufio.Reader, out io.Writer) error {
	if err := jail.Enter(spec); err != nil {
		_, werr := fmt.Fprintln(out, strings.ReplaceAll(err.Error(), "\n", " "))
		return werr
	}
	_, err := fmt.Fprintln(out, "entered")
	return err
}

// A hostPath PersistentVolume's directory is opened from its --host-path-roots
// directory at the moment the jail binds it: a directory on the way that a tenant
// swapped for a symbolic link after the agent's own check is refused, never followed.
func TestJailOpensAHostPathVolumeFromItsRoot(t *testing.T) {
	f := newFixture(t)
	root := filepath.Join(filepath.Dir(f.volume), "root")
	if err := os.MkdirAll(filepath.Join(root, "pvc-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.volume, filepath.Join(root, "pvc-1", "data")); err != nil {
		t.Fatal(err)
	}
	// pvc-2 is a tenant's link to the node's directory outside the root.
	if err := os.Symlink(f.outside, filepath.Join(root, "pvc-2")); err != nil {
		t.Fatal(err)
	}

	c := startChild(t, "inspect", jail.Spec{Volume: "pvc-1/data", VolumeRoot: root, Work: f.work}, "", true)
	var got inspection
	if err := json.Unmarshal([]byte(c.line(t)), &got); err != nil {
		t.Fatal(err)
	}
	if got.Data != originalData {
		t.Errorf("/volume/data = %q, want the hostPath volume's file", got.Data)
	}

	for rel, want := range map[string]string{"pvc-2": "symbolic link", "pvc-2/sub": "symbolic link", "../outside": `".."`} {
		work := t.TempDir() // each jail builds its root in its own work directory
		c := startChild(t, "enter", jail.Spec{Volume: rel, VolumeRoot: root, Work: work}, "", true)
		if got := c.line(t); !strings.Contains(got, want) {
			t.Errorf("a jail over %s: %q, want it refused for a %s", rel, got, want)
		}
	}
}
