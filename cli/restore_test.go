package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// syncBuffer is a buffer that a test reads while the command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRestore runs kubectl holdfast restore in the background, its output readable
// while it runs, and (with $HOLDFAST_CLI_TRANSCRIPT) records it as holdfast does.
func startRestore(t *testing.T, args ...string) (*syncBuffer, <-chan result) {
	t.Helper()
	e := testenv.Require(t, env)
	args = append([]string{"restore"}, args...)
	var stdout, stderr syncBuffer
	done := make(chan result, 1)
	go func() {
		code := runWithInput(t.Context(), append([]string{"--kubeconfig", e.Kubeconfig}, args...), strings.NewReader(""), &stdout, &stderr)
		if f := os.Getenv("HOLDFAST_CLI_TRANSCRIPT"); f != "" {
			if out, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				fmt.Fprintf(out, "$ kubectl holdfast %s\n%s%s(exit %d)\n\n", strings.Join(args, " "), stdout.String(), stderr.String(), code)
				out.Close()
			}
		}
		done <- result{stdout.String(), stderr.String(), code}
	}()
	return &stdout, done
}

// backupOf creates a Completed PodVolumeBackup of source path src in ns, as the agent
// leaves one: what the restore controller restores from.
func (o *objects) backupOf(ns, name, src, snapshot string) {
	o.t.Helper()
	b := &v1.PodVolumeBackup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "node-a", Pod: v1.PodReference{Name: "web", UID: "uid"}, Volume: "data",
			SourcePath: src, StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia}}
	o.create(b)
	now := metav1.Now()
	b.Status = v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: snapshot, StartTime: &now, CompletionTime: &now}
	if err := o.e.Client.Status().Update(o.ctx, b); err != nil {
		o.t.Fatal(err)
	}
}

// podVolumeRestore waits for the one PodVolumeRestore of restore vr in ns.
func podVolumeRestore(t *testing.T, ns, vr string) *v1.PodVolumeRestore {
	t.Helper()
	e := testenv.Require(t, env)
	var list v1.PodVolumeRestoreList
	testenv.Eventually(t, "the PodVolumeRestore of "+vr, func() error {
		if err := e.Client.List(t.Context(), &list, client.InNamespace(ns), client.MatchingLabels{v1.LabelRestore: identity.LabelValue(vr)}); err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d PodVolumeRestores, want 1", len(list.Items))
		}
		return nil
	})
	return &list.Items[0]
}

// playAgent sets a PodVolumeRestore's status as the agent of its node would (envtest
// has no agent and no kubelet).
func playAgent(t *testing.T, pvr *v1.PodVolumeRestore, phase v1.RunPhase, p v1.Progress, msg string) {
	t.Helper()
	e := testenv.Require(t, env)
	pvr.Status.Phase, pvr.Status.Progress, pvr.Status.Message = phase, p, msg
	if phase == v1.RunCompleted || phase == v1.RunFailed {
		now := metav1.Now()
		pvr.Status.CompletionTime = &now
	}
	if err := e.Client.Status().Update(t.Context(), pvr); err != nil {
		t.Fatal(err)
	}
}

func labelPod(t *testing.T, ns, name string, labels map[string]string) {
	t.Helper()
	e := testenv.Require(t, env)
	pod := &corev1.Pod{}
	if err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Labels = labels
	if err := e.Client.Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
}

func waitOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("the output to show %q", want), func() error {
		if !strings.Contains(out.String(), want) {
			return fmt.Errorf("output so far:\n%s", out.String())
		}
		return nil
	})
}

func noRestores(t *testing.T, ns string) {
	t.Helper()
	var list v1.VolumeRestoreList
	if err := testenv.Require(t, env).Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) > 0 {
		t.Errorf("%d VolumeRestores exist in %s; want none", len(list.Items), ns)
	}
}

// --dry-run prints the VolumeRestore that a claim, paths and a sub-path make, clean
// enough to commit (no status, no server-set metadata), and creates nothing;
// --dry-run=server prints it as the API server defaults it.
func TestRestoreDryRunPrintsTheManifest(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	out, stderr, code := holdfast(t, "", "restore", "-n", ns, "--claim", "data-db-0", "--path", "notes/2026", "--path", "config.yaml",
		"--sub-path", "restored", "--name", "db-notes", "--dry-run")
	if code != ExitOK {
		t.Fatalf("exit %d: %s%s", code, out, stderr)
	}
	want := `apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeRestore
metadata:
  name: db-notes
  namespace: ` + ns + `
spec:
  claimSelector: {}
  paths:
  - notes/2026
  - config.yaml
  source:
    latest: true
  target:
    subPath: restored
  volumes:
  - name: data-db-0
`
	if out != want {
		t.Errorf("--dry-run printed\n%s\nwant\n%s", out, want)
	}
	noRestores(t, ns)

	out, stderr, code = holdfast(t, "", "restore", "-n", ns, "--claim", "data-db-0", "--before", "2026-12-01T02:00:00Z", "--name", "db-before", "--dry-run=server", "-o", "json")
	if code != ExitOK {
		t.Fatalf("--dry-run=server: exit %d: %s%s", code, out, stderr)
	}
	for _, want := range []string{`"before": "2026-12-01T02:00:00Z"`, `"runningPods": "Skip"`, `"pendingDeadline": "1h0m0s"`, `"name": "db-before"`} {
		if !strings.Contains(out, want) {
			t.Errorf("--dry-run=server -o json lacks %s (the API server's defaults):\n%s", want, out)
		}
	}
	if strings.Contains(out, "status") || strings.Contains(out, "managedFields") || strings.Contains(out, "uid") {
		t.Errorf("--dry-run=server printed server-set fields:\n%s", out)
	}
	noRestores(t, ns)
}

// Wrong flags fail with exit 2 and a sentence naming the flag, before anything is
// created.
func TestRestoreFlagErrors(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "give exactly one of --pod, -l/--selector, --claim and --claim-selector"},
		{[]string{"--pod", "web", "--claim", "data"}, "give exactly one of --pod"},
		{[]string{"-l", "app in (web"}, `-l/--selector "app in (web" is not a label selector`},
		{[]string{"--claim-selector", "=vault"}, `--claim-selector "=vault" is not a label selector`},
		{[]string{"--claim", "data", "--volume", "data"}, "--volume names volumes of pods"},
		{[]string{"--pod", "web", "--backup", "web-data-1"}, "--backup names the backup of one volume"},
		{[]string{"-l", "app=web", "--volume", "a", "--volume", "b", "--from", "old"}, "--from gives one volume another source"},
		{[]string{"--claim", "data", "--backup", "b", "--before", "2h"}, "give at most one of --backup and --before"},
		{[]string{"--claim", "data", "--before", "yesterday"}, `--before "yesterday" is neither an RFC 3339 time`},
		{[]string{"--claim", "data", "--path", "/etc/passwd"}, `--path "/etc/passwd" must be relative to the volume's root`},
		{[]string{"--claim", "data", "--path", "notes/../../etc"}, `--path "notes/../../etc" must be relative`},
		{[]string{"--claim", "data", "--sub-path", "restored/"}, `--sub-path "restored/" must be relative`},
		{[]string{"--claim", "data", "--from", "/pvc/../x"}, `--from "/pvc/../x" must be a claim name or a source path`},
		{[]string{"--claim", "data", "--running-pods", "always"}, `--running-pods must be Skip or Overwrite, not "always"`},
		{[]string{"--claim", "data", "-o", "table"}, `--output must be yaml or json, not "table"`},
		{[]string{"--claim", "data", "--dry-run=maybe"}, `invalid argument "maybe" for "--dry-run"`},
		{[]string{"--claim", "data", "extra"}, `unknown command "extra"`},
	} {
		// --no-wait: flags that wrongly pass create a restore and return at once.
		args := append([]string{"restore", "-n", ns, "--no-wait"}, c.args...)
		out, stderr, code := holdfast(t, "", args...)
		if code != ExitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q (stdout %q)", strings.Join(c.args, " "), code, stderr, c.want, out)
		}
	}
	noRestores(t, ns)
}

// --pod names a pod by its labels, which must select only it; a pod that exists is
// written into only with --running-pods given.
func TestRestoreIntoAPodNeedsItsOwnLabelsAndAChoice(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	o.app(ns, "web")
	_, stderr, code := holdfast(t, "", "restore", "-n", ns, "--pod", "web", "--running-pods=Overwrite")
	if code != ExitError || !strings.Contains(stderr, "pod web has no labels, and a VolumeRestore selects pods by label") {
		t.Errorf("--pod of a pod without labels: exit %d, %q; want exit 1 saying so", code, stderr)
	}
	labelPod(t, ns, "web", map[string]string{"app": "web"})
	_, stderr, code = holdfast(t, "", "restore", "-n", ns, "--pod", "web", "--no-wait")
	if code != ExitUsage || !strings.Contains(stderr, "pod web exists already, so no restore-wait holds it") || !strings.Contains(stderr, "--running-pods=Overwrite") {
		t.Errorf("--pod without --running-pods: exit %d, %q; want exit 2 asking for --running-pods", code, stderr)
	}
	_, stderr, code = holdfast(t, "", "restore", "-n", ns, "--claim", "web-data", "--no-wait")
	if code != ExitUsage || !strings.Contains(stderr, "claim web-data is used by pod web") {
		t.Errorf("--claim of a running pod without --running-pods: exit %d, %q; want exit 2 naming the pod", code, stderr)
	}
	// Two replicas share their labels.
	for _, name := range []string{"rep-1", "rep-2"} {
		o.create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "rep"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}})
	}
	_, stderr, code = holdfast(t, "", "restore", "-n", ns, "--pod", "rep-1", "--running-pods", "Overwrite")
	if code != ExitError || !strings.Contains(stderr, "the labels of pod rep-1 (app=rep) also select 1 other pod rep-2") {
		t.Errorf("--pod of a replica: exit %d, %q; want exit 1 naming the other pod", code, stderr)
	}
	_, stderr, code = holdfast(t, "", "restore", "-n", ns, "--pod", "nope", "--running-pods", "Overwrite")
	if code != ExitError || !strings.Contains(stderr, "getting pod nope") {
		t.Errorf("--pod of a missing pod: exit %d, %q", code, stderr)
	}
	noRestores(t, ns)
}

// restore creates the VolumeRestore, follows the restore controller's work and the
// PodVolumeRestore's progress (the test plays the node agent: envtest has no kubelet
// and no agent), and exits 0 with a summary when it Completed.
func TestRestoreFollowsToCompleted(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	o.app(ns, "web")
	labelPod(t, ns, "web", map[string]string{"app": "web"})
	o.backupOf(ns, "web-data-1", "/pvc/web-data", "k1")

	out, done := startRestore(t, "-n", ns, "--pod", "web", "--volume", "data", "--path", "notes/2026", "--running-pods=Overwrite", "--name", "web-notes")
	pvr := podVolumeRestore(t, ns, "web-notes")
	if got := pvr.Spec.Paths; len(got) != 1 || got[0] != "notes/2026" || pvr.Spec.SnapshotID != "k1" || pvr.Spec.Pod.Name != "web" {
		t.Errorf("PodVolumeRestore spec %+v; want snapshot k1 into pod web, paths [notes/2026]", pvr.Spec)
	}
	playAgent(t, pvr, v1.RunInProgress, v1.Progress{TotalBytes: 3 << 20, BytesDone: 1 << 20, TotalFiles: 10, FilesDone: 3}, "")
	waitOutput(t, out, "  pod web volume data: InProgress, 1.0 MiB of 3.0 MiB, 3 of 10 files\n")
	playAgent(t, pvr, v1.RunCompleted, v1.Progress{TotalBytes: 3 << 20, BytesDone: 3 << 20, TotalFiles: 10, FilesDone: 10}, "")
	r := waitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("exit %d, want 0:\n%s%s", r.code, r.out, r.err)
	}
	wantLines(t, r.out, "VolumeRestore web-notes created in namespace "+ns,
		"  pod web volume data: InProgress, 1.0 MiB of 3.0 MiB, 3 of 10 files",
		"  pod web volume data: Completed, 3.0 MiB, 10 files")
	if !regexp.MustCompile(`(?m)^VolumeRestore web-notes Completed: 1 volume restored into 1 pod in \d+s$`).MatchString(r.out) {
		t.Errorf("no one-line summary of the completed restore:\n%s", r.out)
	}
	var vr v1.VolumeRestore
	if err := o.e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-notes"}, &vr); err != nil {
		t.Fatal(err)
	}
	if got := vr.Spec.PodSelector.MatchLabels; len(got) != 1 || got["app"] != "web" || vr.Spec.RunningPods != v1.RunningPodsOverwrite {
		t.Errorf("VolumeRestore spec %+v; want podSelector app=web (the pod's labels), runningPods Overwrite", vr.Spec)
	}
}

// A restore whose volume fails ends Failed: exit 1 with the restore's sentence, which
// names the volume and why.
func TestRestoreFollowsToFailed(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	o.app(ns, "web")
	claim := &corev1.PersistentVolumeClaim{}
	if err := o.e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-data"}, claim); err != nil {
		t.Fatal(err)
	}
	claim.Status.Phase = corev1.ClaimBound // no PersistentVolume controller in envtest
	if err := o.e.Client.Status().Update(t.Context(), claim); err != nil {
		t.Fatal(err)
	}
	o.backupOf(ns, "web-data-1", "/pvc/web-data", "k1")

	out, done := startRestore(t, "-n", ns, "--claim", "web-data", "--path", "notes/2027", "--running-pods", "overwrite", "--name", "web-2027")
	pvr := podVolumeRestore(t, ns, "web-2027")
	playAgent(t, pvr, v1.RunInProgress, v1.Progress{}, "")
	waitOutput(t, out, "  claim web-data (through pod web): InProgress\n")
	playAgent(t, pvr, v1.RunFailed, v1.Progress{}, `path notes/2027 is not in snapshot k1`)
	r := waitResult(t, done)
	if r.code != ExitError {
		t.Fatalf("exit %d, want 1:\n%s%s", r.code, r.out, r.err)
	}
	wantLines(t, r.out, "  claim web-data (through pod web): Failed: path notes/2027 is not in snapshot k1")
	if !regexp.MustCompile(`Error: VolumeRestore web-2027 Failed after \d+s: 1 of 1 volume\(s\) could not be restored: .*path notes/2027 is not in snapshot k1`).MatchString(r.err) {
		t.Errorf("stderr does not give the Failed sentence:\n%s", r.err)
	}
}

// What the API server refuses (here the CRD's bound on a path's length, which the
// plugin does not check itself) is printed as the API server says it, exit 1, with
// and without --dry-run=server.
func TestRestoreRejectedByTheAPIServer(t *testing.T) {
	e := testenv.Require(t, env)
	ns := e.Namespace(t, nil)
	long := strings.Repeat("a", 1100)
	for _, dry := range []string{"--dry-run=server", "--no-wait"} {
		_, stderr, code := holdfast(t, "", "restore", "-n", ns, "--claim", "data", "--path", long, "--running-pods=Skip", "--name", "too-long", dry)
		if code != ExitError || !strings.Contains(stderr, `VolumeRestore.backup.holdfast.dev "too-long" is invalid`) || !strings.Contains(stderr, "spec.paths[0]: Too long") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and the API server's message naming spec.paths[0]", dry, code, stderr)
		}
	}
	noRestores(t, ns)
}

// With -o json the progress goes to stderr and stdout holds only the VolumeRestore as it
// ended, status included, for a script to read.
func TestRestoreOutputIsTheFinalState(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	o.app(ns, "web")
	labelPod(t, ns, "web", map[string]string{"app": "web"})
	o.backupOf(ns, "web-data-1", "/pvc/web-data", "k1")

	_, done := startRestore(t, "-n", ns, "--pod", "web", "--running-pods=Overwrite", "--name", "web-all", "-o", "json")
	playAgent(t, podVolumeRestore(t, ns, "web-all"), v1.RunCompleted, v1.Progress{TotalBytes: 10, BytesDone: 10, TotalFiles: 1, FilesDone: 1}, "")
	r := waitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("exit %d, want 0:\n%s%s", r.code, r.out, r.err)
	}
	var got restoreManifest
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.out)
	}
	if got.Metadata.Name != "web-all" || got.Status == nil || got.Status.Phase != v1.RestoreCompleted || got.Status.VolumesCompleted != 1 {
		t.Errorf("stdout: %+v; want web-all Completed with 1 volume", got)
	}
	wantLines(t, r.err, "VolumeRestore web-all created in namespace "+ns, "  pod web volume data: Completed, 10 B, 1 file")
}

// With -l and the API's default runningPods: Skip, a pod that ran before the restore is
// left alone and the plugin says so with the restore's sentence; --timeout stops
// following (exit 1), not the restore.
func TestRestoreSaysWhatItSkipsAndTimesOut(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	o.app(ns, "web")
	labelPod(t, ns, "web", map[string]string{"app": "web"})
	o.backupOf(ns, "web-data-1", "/pvc/web-data", "k1")

	r := waitResult(t, func() <-chan result {
		_, done := startRestore(t, "-n", ns, "-l", "app=web", "--name", "web-skip", "--timeout", "5s")
		return done
	}())
	if r.code != ExitError {
		t.Fatalf("exit %d, want 1 after --timeout:\n%s%s", r.code, r.out, r.err)
	}
	wantLines(t, r.out, "  pod web volume data: skipped (PodNotHeld): not restored: pod web was created before this restore")
	if !strings.Contains(r.err, "following VolumeRestore web-skip: context deadline exceeded; it goes on (kubectl describe vr -n "+ns+" web-skip)") {
		t.Errorf("stderr does not say that the restore goes on: %q", r.err)
	}
}
