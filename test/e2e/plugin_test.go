package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/cli"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The plugin story's objects (manifests/plugin.yaml).
const (
	pluginNamespace = "journal"
	pluginDir       = "notes/2026"
)

// pluginRestoresOneDirectory: a directory deleted by mistake in a running pod is looked
// at and given back with the kubectl plugin, as a user types it: snapshots lists the
// store's restore points, ls and get list and download the deleted directory through
// a browse session (relay pod, port-forward), byte for byte; `kubectl holdfast restore
// --pod ... --path ...` writes the VolumeRestore and follows it to Completed (exit 0);
// the directory's files come back byte for byte, every other file of the volume (some
// changed on purpose after the backup) keeps its content and modification time, and
// the pod is not restarted.
func (s *stories) pluginRestoresOneDirectory(t *testing.T) {
	ps := &pluginStory{s: s, t: t}
	t.Cleanup(ps.remove)
	ps.deploy()
	ps.writeAndBackUp()
	ps.deleteTheDirectory()
	ps.browseWithThePlugin()
	ps.restoreWithThePlugin()
	ps.checkTheVolume()
}

type pluginStory struct {
	s *stories
	t *testing.T
	// bin is the directory holding the built binary as kubectl-holdfast.
	bin string
	// snapshot is the snapshot ID of the run's backup of the volume.
	snapshot string
	// pod is the journal pod's UID before anything happened to it.
	podUID string
	// want are the checksums of pluginDir at the backup; others the checksums,
	// modification times and sizes of every other file before the restore.
	want, others string
}

// sums is sha256sum of the files below /data/dir of the journal pod, in a stable order,
// with what find's extra arguments leave out; withStat adds each file's modification
// time (seconds and nanoseconds) and size.
func (ps *pluginStory) sums(dir, findArgs string, withStat bool) string {
	ps.t.Helper()
	list := "find . -type f " + findArgs + " | sort"
	script := "cd /data/" + dir + " && " + list + " | xargs sha256sum"
	if withStat {
		script += " && " + list + " | xargs stat -c '%n %y %s'"
	}
	out, err := ps.s.e.Kubectl(ps.t.Context(), "", "-n", pluginNamespace, "exec", "journal", "--", "sh", "-c", script)
	if err != nil {
		ps.t.Fatal(err)
	}
	return out
}

func (ps *pluginStory) deploy() {
	t, e := ps.t, ps.s.e
	ctx := t.Context()
	// Alone, the story may start before the manager's webhook serves the policies.
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		last = e.Apply(ctx, "plugin.yaml")
		return last == nil, nil
	}); err != nil {
		t.Fatalf("applying plugin.yaml: %v (%v)", err, last)
	}
	pod, err := e.PodIn(ctx, pluginNamespace, map[string]string{"app": "journal"}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ps.podUID = string(pod.UID)
}

func (ps *pluginStory) writeAndBackUp() {
	t, e := ps.t, ps.s.e
	ctx := t.Context()
	script := "cd /data && mkdir -p notes/2026/march notes/2025 && " +
		"head -c 300000 /dev/urandom > notes/2026/january.txt && head -c 5000 /dev/urandom > notes/2026/march/12.txt && " +
		"echo idea > notes/2025/old.txt && echo v1 > settings.conf"
	if _, err := e.Kubectl(ctx, "", "-n", pluginNamespace, "exec", "journal", "--", "sh", "-c", script); err != nil {
		t.Fatal(err)
	}
	ps.want = ps.sums(pluginDir, "", false)
	previous, err := e.StartRun(ctx, "journal", "journal-1")
	if err != nil {
		t.Fatal(err)
	}
	run, err := e.WaitRunEnded(ctx, "journal", "journal-1", previous)
	if err != nil {
		t.Fatal(err)
	}
	if lr := run.Policy.Status.LastRun; lr.Outcome != backupv1alpha1.RunOutcomeSucceeded || run.Backup("data") == nil {
		t.Fatalf("run %s %s %q; want one Completed backup of volume data", lr.Name, lr.Outcome, lr.Message)
	}
	ps.snapshot = run.Backup("data").Status.SnapshotID
}

func (ps *pluginStory) deleteTheDirectory() {
	t, e := ps.t, ps.s.e
	e.Log("deleting %s in the running pod, and changing other files on purpose", pluginDir)
	script := "cd /data && rm -rf " + pluginDir + " && echo v2 > settings.conf && echo new > notes/later.txt"
	if _, err := e.Kubectl(t.Context(), "", "-n", pluginNamespace, "exec", "journal", "--", "sh", "-c", script); err != nil {
		t.Fatal(err)
	}
	ps.others = ps.sums("", "-not -path './"+pluginDir+"/*' -not -path './.holdfast/*'", true)
}

// plugin runs `kubectl holdfast args...` as a user does: the built holdfast binary named
// kubectl-holdfast on PATH beside the cluster's kubectl, the cluster's kubeconfig in
// $KUBECONFIG. It shows the command and its output in the log under title and returns
// the output and error.
func (ps *pluginStory) plugin(title string, args ...string) (string, error) {
	t, e := ps.t, ps.s.e
	if ps.bin == "" {
		dir := t.TempDir()
		bin, err := testenv.BuildHoldfast(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin, filepath.Join(dir, cli.PluginName)); err != nil {
			t.Fatal(err)
		}
		ps.bin = dir
	}
	args = append([]string{"holdfast"}, args...)
	cmd := exec.CommandContext(t.Context(), filepath.Join(e.Cluster.ToolsBin, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "PATH="+ps.bin+":"+e.Cluster.ToolsBin+":"+os.Getenv("PATH"), "KUBECONFIG="+e.Cluster.Kubeconfig())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	e.Show(title+"\n$ kubectl "+strings.Join(args, " "), out.String()+"(exit "+exitCode(err)+", "+time.Since(start).Round(time.Second).String()+")")
	return out.String(), err
}

// browseWithThePlugin: before giving the directory back, the user looks at what the
// store holds. snapshots lists the run's snapshot (read from the store by the manager);
// ls lists the deleted directory's parent in it; get downloads the deleted directory
// to this machine through a relay pod and port-forward, byte for byte as it was; the
// session records the download, naming the user.
func (ps *pluginStory) browseWithThePlugin() {
	t, e := ps.t, ps.s.e
	volume := []string{"-n", pluginNamespace, "--pod", "journal", "--volume", "data"}
	out, err := ps.plugin("The store's restore points of the journal pod's volume:", append([]string{"snapshots"}, volume...)...)
	if err != nil || !strings.Contains(out, ps.snapshot) {
		t.Fatalf("kubectl holdfast snapshots: %v; want snapshot %s listed:\n%s", err, ps.snapshot, out)
	}
	out, err = ps.plugin("What the newest one holds under notes:", append([]string{"ls", "notes"}, volume...)...)
	if err != nil || !strings.Contains(out, "2026/") || !strings.Contains(out, "2025/") {
		t.Fatalf("kubectl holdfast ls: %v; want 2025/ and 2026/:\n%s", err, out)
	}
	to := t.TempDir()
	out, err = ps.plugin("Download the deleted directory from it:", append([]string{"get", pluginDir, "--to", to}, volume...)...)
	if err != nil || !strings.Contains(out, "2 files") {
		t.Fatalf("kubectl holdfast get: %v; want 2 files:\n%s", err, out)
	}
	if got := localSums(t, filepath.Join(to, filepath.Base(pluginDir))); got != ps.want {
		t.Errorf("downloaded %s:\n%s\nwant\n%s", pluginDir, got, ps.want)
	}
	events, err := e.Kubectl(t.Context(), "", "-n", pluginNamespace, "get", "events", "--field-selector", "involvedObject.kind=BrowseSession",
		"-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(events, "downloaded "+pluginDir+" of snapshot "+ps.snapshot) {
		t.Errorf("no event of the download on the session:\n%s", events)
	}
	e.Show("The session's events:", events)
	described, err := e.Kubectl(t.Context(), "", "-n", pluginNamespace, "describe", "browsesessions")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Requested By:", "Snapshot ID:", ps.snapshot, "Reason:                Serving", "Relay Pod:", "Phase:                   Ready"} {
		if !strings.Contains(described, want) {
			t.Errorf("kubectl describe browsesessions does not say %q:\n%s", want, described)
		}
	}
	e.Show("$ kubectl -n "+pluginNamespace+" describe browsesessions", described)
}

// localSums is what sums gives in the pod, for a local directory: sha256sum lines of
// its files, ./-relative, sorted by name.
func localSums(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, "./"+rel)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(data), n)
	}
	return b.String()
}

// restoreWithThePlugin gives the directory back with `kubectl holdfast restore`, which
// follows the restore to its end.
func (ps *pluginStory) restoreWithThePlugin() {
	t, e := ps.t, ps.s.e
	args := []string{"restore", "-n", pluginNamespace, "--pod", "journal", "--volume", "data", "--path", pluginDir,
		"--running-pods=Overwrite", "--name", "journal-2026", "--timeout", "5m"}
	e.Log("restoring %s", pluginDir)
	out, err := ps.plugin("The plugin restores one directory into the running pod and follows it:", args...)
	if err != nil {
		t.Fatalf("kubectl holdfast restore: %v\n%s", err, out)
	}
	if !strings.Contains(out, "VolumeRestore journal-2026 Completed: 1 volume restored into 1 pod") {
		t.Errorf("kubectl holdfast restore did not end with its summary:\n%s", out)
	}
}

func exitCode(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "0"
	case errors.As(err, &ee):
		return strings.TrimPrefix(ee.ProcessState.String(), "exit status ")
	}
	return err.Error()
}

func (ps *pluginStory) checkTheVolume() {
	t, e := ps.t, ps.s.e
	ctx := t.Context()
	if got := ps.sums(pluginDir, "", false); got != ps.want {
		t.Errorf("%s after the restore:\n%s\nwant\n%s", pluginDir, got, ps.want)
	}
	rest := ps.sums("", "-not -path './"+pluginDir+"/*' -not -path './.holdfast/*'", true)
	if rest != ps.others {
		t.Errorf("the files outside %s changed (content, modification time or size):\n%s\nwant them as they were before the restore\n%s", pluginDir, rest, ps.others)
	}
	for _, f := range []string{"./settings.conf", "./notes/later.txt", "./notes/2025/old.txt"} {
		if !strings.Contains(rest, f) {
			t.Errorf("%s is not in the volume:\n%s", f, rest)
		}
	}
	now, err := e.PodIn(ctx, pluginNamespace, map[string]string{"app": "journal"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if string(now.UID) != ps.podUID || now.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the journal pod was disturbed: uid %s (was %s), restarts %d", now.UID, ps.podUID, now.Status.ContainerStatuses[0].RestartCount)
	}
}

func (ps *pluginStory) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ps.s.e.DeleteNamespace(ctx, pluginNamespace); err != nil {
		ps.t.Errorf("removing the story's namespace: %v", err)
	}
	if _, err := ps.s.e.Kubectl(ctx, "", "delete", "--ignore-not-found", "vbp/journal"); err != nil {
		ps.t.Errorf("removing the story's policy: %v", err)
	}
}
