package e2e

// These tests start the real local cluster (test/cluster), so they need root, the
// binaries of `make tools` and the packages of `make cluster-packages`. They are
// skipped only by -short; when a prerequisite is missing they fail and say which.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	miniogo "github.com/minio/minio-go/v7"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/cluster"
)

// suite is the package's one cluster with Holdfast installed. The recovery story
// brings up a new cluster in the same state directory and hands it on (SetEnv).
var suite = &Suite{
	Name:    "e2e",
	Cluster: cluster.New(filepath.Join(os.TempDir(), "holdfast-e2e")),
	// The recovery stories' network device, if a test binary that made it was killed.
	Prepare: func(func(string, ...any)) (func() error, error) { return nil, removeOffsiteDevice() },
}

func TestMain(m *testing.M) { suite.Main(m) }

func requireEnv(t *testing.T) *Env {
	t.Helper()
	return suite.Env(t)
}

// TestStories tells the user stories in order on one cluster; each builds on the
// state the previous one left, so the first failure stops the rest.
func TestStories(t *testing.T) {
	e := requireEnv(t)
	t.Cleanup(func() {
		if err := suite.TearDown(); err != nil {
			t.Error(err)
		}
	})
	s := &stories{e: e, parent: t}
	for _, st := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"BackUpDeploymentAndStatefulSet", s.backUpDeploymentAndStatefulSet},
		{"ChangedFileUploadsOnlyTheChange", s.changedFileUploadsOnlyTheChange},
		{"ReplacementPodStaysIncremental", s.replacementPodStaysIncremental},
		{"RestoreWaitsBeforeTheAppStarts", s.restoreWaitsBeforeTheAppStarts},
		{"DataOnlyRestoreIntoARunningPod", s.dataOnlyRestoreIntoARunningPod},
		{"InvalidSelectorRejectedByTheWebhook", s.invalidSelectorRejectedByTheWebhook},
		{"ResticBackupAndRestore", s.resticBackupAndRestore},
		{"RetentionExpiresTheOldestBackups", s.retentionExpiresTheOldestBackups},
		{"ThreeNamespacesToMinIOInAPod", s.threeNamespacesToMinIOInAPod},
		{"WrongCredentialsSayWhyNoBackupRan", s.wrongCredentialsSayWhyNoBackupRan},
		{"AgentPodDeletedMidBackup", s.agentPodDeletedMidBackup},
		{"MinIOStoppedMidRunThenStarted", s.minIOStoppedMidRunThenStarted},
		{"SamplePolicyAdmittedAsShipped", s.samplePolicyAdmittedAsShipped},
		// prometheus_test.go
		{"PrometheusSeesEveryVolumeAndAlerts", s.prometheusSeesEveryVolumeAndAlerts},
		// fidelity_test.go
		{"EveryFileBackAsItWas", s.everyFileBackAsItWas},
		// oneshot_test.go
		{"OneApplyRestoresADeletedNamespace", s.oneApplyRestoresADeletedNamespace},
		// localpath_test.go
		{"LocalPathClaimBackedUpAndRestored", s.localPathClaimBackedUpAndRestored},
		// hooks_test.go
		{"HooksQuiesceAndResume", s.hooksQuiesceAndResume},
		// partial_test.go
		{"OneDirectoryBackIntoARunningPod", s.oneDirectoryBackIntoARunningPod},
		// plugin_test.go
		{"PluginRestoresOneDirectory", s.pluginRestoresOneDirectory},
		// scaledzero_test.go
		{"StatefulSetScaledToZeroBackedUp", s.statefulSetScaledToZeroBackedUp},
		{"StatefulSetClaimsRestoredBeforeScaleUp", s.statefulSetClaimsRestoredBeforeScaleUp},
		// recovery_test.go: the last two take the cluster down and bring up a new one.
		{"NamespaceDeletedRestoredFromTheStore", s.namespaceDeletedRestoredFromTheStore},
		{"ClusterLostRestoredFromTheStore", s.clusterLostRestoredFromTheStore},
		{"WrongIdentityRecoversNothing", s.wrongIdentityRecoversNothing},
	} {
		if !t.Run(st.name, st.fn) {
			t.Log(s.e.Diagnose(context.Background()))
			t.Fatalf("story %s failed; the later stories depend on it", st.name)
		}
	}
}

type stories struct {
	e *Env
	// parent is TestStories' test, for what lives as long as the stories.
	parent *testing.T
	first  *Run
	// minio is the MinIO pod of the MinIO stories.
	minio *MinIO
	// cacheSums are the cache's checksums at the last backup.
	cacheSums string
	// store is the store outside the cluster of the recovery stories, started by the
	// first of them.
	store *offsiteStore
	// wikiSums are the wiki's checksums at its last backup.
	wikiSums string
	// rebuilt says that the cluster was lost and a new one runs.
	rebuilt bool
	// vaultSums are the scaled-to-zero StatefulSet's checksums before its backup.
	vaultSums string
}

// The emptyDir volume of the cache Deployment and the claim volume of the db
// StatefulSet (manifests/).
const (
	cacheVolume = "cache"
	dbVolume    = "data"
)

func (s *stories) backUpDeploymentAndStatefulSet(t *testing.T) {
	ctx := t.Context()
	if err := s.e.DeployApp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.e.ApplyPolicy(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicy(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	s.first = run
	st := run.Policy.Status
	if st.SelectedVolumes != 2 || st.SelectedNamespaces != 1 || st.SkippedVolumes != 0 {
		t.Errorf("policy status: %d volumes in %d namespaces, %d skipped; want 2 in 1, 0 skipped", st.SelectedVolumes, st.SelectedNamespaces, st.SkippedVolumes)
	}
	if lr := st.LastRun; lr.VolumesTotal != 2 || lr.VolumesCompleted != 2 || lr.VolumesFailed != 0 || lr.Trigger != "RunNow" {
		t.Errorf("last run: %+v", lr)
	}
	if len(run.Backups) != 2 {
		t.Fatalf("%d PodVolumeBackups, want 2", len(run.Backups))
	}
	for _, v := range []string{cacheVolume, dbVolume} {
		b := run.Backup(v)
		if b == nil {
			t.Fatalf("no backup of volume %s", v)
		}
		if b.Status.Phase != backupv1alpha1.RunCompleted || b.Status.SnapshotID == "" {
			t.Errorf("%s: phase %s, snapshot %q", b.Name, b.Status.Phase, b.Status.SnapshotID)
		}
		// seq 1 200000 is 1.3 MB, seq 1 300000 2 MB: all of it is new.
		if b.Status.BytesUploaded < 1_000_000 {
			t.Errorf("%s: first backup uploaded %d bytes, want the whole volume", b.Name, b.Status.BytesUploaded)
		}
	}
	if got := run.Backup(dbVolume).Spec.ClaimName; got != "data-db-0" {
		t.Errorf("db backup claim %q", got)
	}
	// What a user sees.
	out, err := s.e.Kubectl(ctx, "", "get", "holdfast", "-A")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"backupstoragelocation.backup.holdfast.dev/default", "volumebackuppolicy.backup.holdfast.dev/" + PolicyName, "Succeeded",
		"backuprepository.backup.holdfast.dev/", "podvolumebackup.backup.holdfast.dev/" + run.Backup(cacheVolume).Name, "Completed"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get holdfast -A lacks %q:\n%s", want, out)
		}
	}
	out, err = s.e.Kubectl(ctx, "", "describe", "vbp", PolicyName)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Selected Volumes:     2", "Outcome:", "Succeeded", "Volumes Completed:", "Events:"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl describe vbp lacks %q:\n%s", want, out)
		}
	}
	if t.Failed() {
		t.Logf("kubectl describe vbp %s:\n%s", PolicyName, out)
	}
	if s.cacheSums, err = s.e.Checksums(ctx, "deployment/cache", "/cache"); err != nil {
		t.Fatal(err)
	}
}

// incremental fails the test unless b is an incremental backup: a parent snapshot
// and far fewer bytes uploaded than the volume holds.
func incremental(t *testing.T, b *backupv1alpha1.PodVolumeBackup, max int64) {
	t.Helper()
	if b == nil {
		t.Fatal("no backup of the volume in the run")
	}
	if b.Status.Phase != backupv1alpha1.RunCompleted {
		t.Errorf("%s: phase %s: %s", b.Name, b.Status.Phase, b.Status.Message)
	}
	if b.Status.ParentSnapshotID == "" {
		t.Errorf("%s (%s/%s): no parent snapshot", b.Name, b.Spec.Pod.Name, b.Spec.Volume)
	}
	if b.Status.BytesUploaded > max {
		t.Errorf("%s (%s/%s): uploaded %d bytes, want at most %d", b.Name, b.Spec.Pod.Name, b.Spec.Volume, b.Status.BytesUploaded, max)
	}
}

func (s *stories) changedFileUploadsOnlyTheChange(t *testing.T) {
	ctx := t.Context()
	if err := s.e.WritePod(ctx, "statefulset/db", ChangeDB); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicy(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	// The 1.3 MB table is unchanged; a new small file and the metadata are all that
	// is new. (kopia stores a file smaller than its minimum chunk, a few MB, as one
	// chunk: appending to the table would upload all of it again.)
	db := run.Backup(dbVolume)
	if db == nil {
		t.Fatal("no backup of the db volume")
	}
	incremental(t, db, 64<<10)
	if db.Status.BytesUploaded == 0 {
		t.Errorf("%s: nothing uploaded although a file changed", db.Name)
	}
	cache := run.Backup(cacheVolume)
	if cache == nil {
		t.Fatal("no backup of the cache volume")
	}
	incremental(t, cache, 64<<10)
}

func (s *stories) replacementPodStaysIncremental(t *testing.T) {
	ctx := t.Context()
	old := s.first.Backup(cacheVolume).Spec.Pod.Name
	if _, err := s.e.Kubectl(ctx, "", "-n", AppNamespace, "delete", "pod", old, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	pod, err := s.e.PodOf(ctx, map[string]string{"app": "cache"}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name == old {
		t.Fatalf("pod %s was not replaced", old)
	}
	run, err := s.e.RunPolicy(ctx, "third")
	if err != nil {
		t.Fatal(err)
	}
	cache := run.Backup(cacheVolume)
	if cache == nil || cache.Spec.Pod.Name != pod.Name {
		t.Fatalf("no backup of the replacement pod %s's cache: %+v", pod.Name, run.Backups)
	}
	// The new pod wrote the same 2 MB of rows and a new 33-byte id: the source
	// identity (/Deployment/cache/cache) is the old pod's, so only the id is new.
	incremental(t, cache, s.first.Backup(cacheVolume).Status.BytesUploaded/4)
	if s.cacheSums, err = s.e.Checksums(ctx, "deployment/cache", "/cache"); err != nil {
		t.Fatal(err)
	}
}

func (s *stories) restoreWaitsBeforeTheAppStarts(t *testing.T) {
	ctx := t.Context()
	r, err := s.e.RestoreCache(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var inits []string
	for _, c := range r.Pod.Spec.InitContainers {
		inits = append(inits, c.Name)
	}
	if len(inits) == 0 || inits[0] != restorewait.ContainerName {
		t.Errorf("the recreated pod's init containers are %v, want %s", inits, restorewait.ContainerName)
	}
	if st := r.Pod.Status.InitContainerStatuses; len(st) == 0 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
		t.Errorf("restore-wait did not exit 0: %+v", st)
	}
	if !strings.Contains(r.Log, "cache: found existing data") {
		t.Errorf("the app did not start on restored data; its log:\n%s", r.Log)
	}
	got, err := s.e.Checksums(ctx, "deployment/cache", "/cache")
	if err != nil {
		t.Fatal(err)
	}
	if got != s.cacheSums {
		t.Errorf("restored data differs:\n got %s\nwant %s", got, s.cacheSums)
	}
	if r.Restore.Status.VolumesCompleted != 1 || r.Restore.Status.VolumesFailed != 0 {
		t.Errorf("VolumeRestore status: %+v", r.Restore.Status)
	}
	out, err := s.e.Kubectl(ctx, "", "-n", AppNamespace, "get", "vr,pvr")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, RestoreName) || !strings.Contains(out, "Completed") {
		t.Errorf("kubectl get vr,pvr:\n%s", out)
	}
}

func (s *stories) dataOnlyRestoreIntoARunningPod(t *testing.T) {
	ctx := t.Context()
	before, err := s.e.Checksums(ctx, "statefulset/db", "/var/lib/db")
	if err != nil {
		t.Fatal(err)
	}
	pod, err := s.e.PodOf(ctx, map[string]string{"app": "db"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the running database's files: overwrite one, delete another.
	if err := s.e.WritePod(ctx, "statefulset/db", "echo garbage > /var/lib/db/table.dat && rm /var/lib/db/id.txt"); err != nil {
		t.Fatal(err)
	}
	if damaged, _ := s.e.Checksums(ctx, "statefulset/db", "/var/lib/db"); damaged == before {
		t.Fatal("the damage did not change the data")
	}
	if err := s.e.Apply(ctx, "restore-db.yaml"); err != nil {
		t.Fatal(err)
	}
	vr, err := s.e.WaitRestore(ctx, "db-in-place")
	if err != nil {
		t.Fatal(err)
	}
	if vr.Status.VolumesCompleted != 1 || len(vr.Status.Volumes) != 1 || vr.Status.Volumes[0].Pod != pod.Name {
		t.Errorf("VolumeRestore status: %+v", vr.Status)
	}
	after, err := s.e.Checksums(ctx, "statefulset/db", "/var/lib/db")
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("data after the in-place restore:\n%s\nwant\n%s", after, before)
	}
	// The pod kept running: same pod, no restart, no init container, no marker left.
	now, err := s.e.PodOf(ctx, map[string]string{"app": "db"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if now.UID != pod.UID || now.Status.ContainerStatuses[0].RestartCount != 0 || len(now.Spec.InitContainers) != 0 {
		t.Errorf("the db pod was disturbed: uid %s (was %s), restarts %d, init containers %d",
			now.UID, pod.UID, now.Status.ContainerStatuses[0].RestartCount, len(now.Spec.InitContainers))
	}
	if out, _ := s.e.Kubectl(ctx, "", "-n", AppNamespace, "exec", "statefulset/db", "--", "ls", "-A", "/var/lib/db"); strings.Contains(out, ".holdfast") {
		t.Errorf("a done-marker directory was left in the running pod's volume: %s", out)
	}
}

func (s *stories) invalidSelectorRejectedByTheWebhook(t *testing.T) {
	ctx := t.Context()
	m, err := s.e.Manifest("policy-invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-")
	if err == nil {
		t.Fatal("the API server accepted a policy whose selector does not compile")
	}
	// The CRD's schema cannot compile CEL selectors; only the webhook type-checks them
	// and names the field and the compiler's position. (A webhook's Invalid status is
	// passed through as is, so there is no "denied the request" prefix.)
	for _, want := range []string{"spec.selector.volumes", "compilation failed", "undefined field 'sizeLimt'"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("kubectl apply's error lacks %q: %v", want, err)
		}
	}
	if out, _ := s.e.Kubectl(ctx, "", "get", "vbp", "invalid-selector", "--ignore-not-found"); out != "" {
		t.Errorf("the invalid policy exists: %s", out)
	}
}

func (s *stories) resticBackupAndRestore(t *testing.T) {
	ctx := t.Context()
	before, err := s.e.Checksums(ctx, "statefulset/db", "/var/lib/db")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.e.Apply(ctx, "policy-restic.yaml"); err != nil {
		t.Fatal(err)
	}
	first, err := s.e.RunPolicyNamed(ctx, "db-restic", "restic-1")
	if err != nil {
		t.Fatal(err)
	}
	b := first.Backup(dbVolume)
	if len(first.Backups) != 1 || b == nil || b.Spec.Uploader != backupv1alpha1.UploaderRestic || b.Spec.Repository != "default-restic" {
		t.Fatalf("restic run backups: %+v", first.Backups)
	}
	if b.Status.SnapshotID == "" || b.Status.BytesUploaded < 1_000_000 {
		t.Errorf("%s: snapshot %q, %d bytes uploaded; want the whole volume", b.Name, b.Status.SnapshotID, b.Status.BytesUploaded)
	}
	if err := s.e.WritePod(ctx, "statefulset/db", ChangeDB); err != nil {
		t.Fatal(err)
	}
	second, err := s.e.RunPolicyNamed(ctx, "db-restic", "restic-2")
	if err != nil {
		t.Fatal(err)
	}
	incremental(t, second.Backup(dbVolume), 64<<10)

	// Damage, then restore the first restic snapshot by name, into the running pod
	// (which the restore must say: runningPods: Overwrite).
	if err := s.e.WritePod(ctx, "statefulset/db", "echo garbage > /var/lib/db/table.dat && rm /var/lib/db/journal.log"); err != nil {
		t.Fatal(err)
	}
	vr := fmt.Sprintf(`apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeRestore
metadata:
  name: db-from-restic
  namespace: %s
spec:
  podSelector:
    matchLabels:
      app: db
  runningPods: Overwrite
  volumes:
  - name: %s
    source:
      podVolumeBackup: %s
`, AppNamespace, dbVolume, b.Name)
	if _, err := s.e.Kubectl(ctx, vr, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	restored, err := s.e.WaitRestore(ctx, "db-from-restic")
	if err != nil {
		t.Fatal(err)
	}
	if len(restored.Status.Volumes) != 1 || restored.Status.Volumes[0].SnapshotID != b.Status.SnapshotID {
		t.Errorf("restored %+v, want snapshot %s", restored.Status.Volumes, b.Status.SnapshotID)
	}
	after, err := s.e.Checksums(ctx, "statefulset/db", "/var/lib/db")
	if err != nil {
		t.Fatal(err)
	}
	// The first restic snapshot was taken from the data of before: the restore
	// brings back table.dat and journal.log as they were then.
	if after != before {
		t.Errorf("data after the restic restore:\n%s\nwant\n%s", after, before)
	}
	out, err := s.e.Kubectl(ctx, "", "-n", AppNamespace, "get", "brepo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "default-restic") || strings.Count(out, "True") != 2 {
		t.Errorf("kubectl get brepo: want the kopia and the restic repository Ready:\n%s", out)
	}

	// The restic policy keeps the last 2 backups: a third run makes the manager (group
	// 65532, not root) forget the first snapshot in a repository the agent (root)
	// wrote into.
	if _, err := s.e.RunPolicyNamed(ctx, "db-restic", "restic-3"); err != nil {
		t.Fatal(err)
	}
	if err := s.e.WaitBackupsGone(ctx, first.Backups); err != nil {
		t.Fatalf("the first restic backup was not expired: %v", err)
	}
}

// The sample policy keeps the last 3 backups of each volume; a fourth run makes the
// manager expire the first run's backups, deleting their snapshots from repositories
// the agent wrote.
func (s *stories) retentionExpiresTheOldestBackups(t *testing.T) {
	ctx := t.Context()
	if _, err := s.e.RunPolicy(ctx, "fourth"); err != nil {
		t.Fatal(err)
	}
	if err := s.e.WaitBackupsGone(ctx, s.first.Backups); err != nil {
		t.Fatalf("the first run's backups were not expired: %v", err)
	}
	list := &backupv1alpha1.PodVolumeBackupList{}
	if err := s.e.Client.List(ctx, list, client.InNamespace(AppNamespace), client.MatchingLabels{"backup.holdfast.dev/policy": PolicyName}); err != nil {
		t.Fatal(err)
	}
	perVolume := map[string]int{}
	for _, b := range list.Items {
		perVolume[b.Spec.SourcePath]++
	}
	for src, n := range perVolume {
		if n != 3 {
			t.Errorf("%d backups of %s, want 3 (keepLast)", n, src)
		}
	}
	logs, err := s.e.Kubectl(ctx, "", "-n", "holdfast-system", "logs", "deployment/holdfast-manager")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs, "permission denied") {
		t.Errorf("the manager could not read what the agent wrote:\n%s", grepLines(logs, "permission denied"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A policy across three namespaces, to an S3 store (MinIO as a pod, reached at its
// Service's cluster IP): it selects the claims of the storage class "fast" and the
// emptyDirs of pods labelled backup=true, in a Deployment, a StatefulSet and bare pods,
// and backs all of them up on one run-now. The objects land under
// <prefix>/kopia/<namespace>/ of the bucket.
func (s *stories) threeNamespacesToMinIOInAPod(t *testing.T) {
	ctx := t.Context()
	m, err := s.e.StartMinIO(ctx, "holdfast")
	if err != nil {
		t.Fatal(err)
	}
	s.minio = m
	if err := s.e.ApplyMinIOLocation(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.e.DeployMoreApps(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.Kubectl(ctx, AllToMinIOPolicy, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicyNamed(ctx, "all-to-minio", "minio-1")
	if err != nil {
		t.Fatal(err)
	}
	st := run.Policy.Status
	if st.SelectedVolumes != 5 || st.SelectedNamespaces != 3 || st.SkippedVolumes != 0 {
		t.Errorf("policy status: %d volumes in %d namespaces, %d skipped %+v; want 5 in 3, 0 skipped", st.SelectedVolumes, st.SelectedNamespaces, st.SkippedVolumes, st.Skipped)
	}
	if lr := st.LastRun; lr.VolumesTotal != 5 || lr.VolumesCompleted != 5 || lr.VolumesFailed != 0 || lr.BytesUploaded < 3_000_000 {
		t.Errorf("last run: %+v", lr)
	}
	got := map[string]string{}
	for _, b := range run.Backups {
		got[b.Namespace+"/"+b.Spec.Pod.Name+"/"+b.Spec.Volume] = b.Spec.SourcePath
		if b.Status.Phase != backupv1alpha1.RunCompleted || b.Spec.Repository != "minio-kopia" {
			t.Errorf("%s/%s: %s in %s", b.Namespace, b.Name, b.Status.Phase, b.Spec.Repository)
		}
	}
	cachePod := run.Backup(cacheVolume).Spec.Pod.Name
	want := map[string]string{
		"shop/db-0/data":              "/pvc/data-db-0",
		"shop/" + cachePod + "/cache": "/deployment/cache/cache",
		"billing/ledger/data":         "/pvc/ledger",
		"billing/ledger/scratch":      "/pod/ledger/scratch",
		"audit/collector/spool":       "/pod/collector/spool",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("backed up (namespace/pod/volume: source path)\n got %v\nwant %v", got, want)
	}
	for _, ns := range []string{AppNamespace, "billing", "audit"} {
		n := 0
		for o := range m.Client.ListObjects(ctx, "holdfast", miniogo.ListObjectsOptions{Prefix: "cluster-a/kopia/" + ns + "/", Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			n++
		}
		if n == 0 {
			t.Errorf("no objects under cluster-a/kopia/%s/ in the bucket", ns)
		}
	}
	out, err := s.e.Kubectl(ctx, "", "get", "vbp", "all-to-minio")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Succeeded") || !regexp.MustCompile(`True\s+5\s+0`).MatchString(out) {
		t.Errorf("kubectl get vbp all-to-minio: want Ready, 5 volumes, 0 skipped, Succeeded:\n%s", out)
	}
}

// A storage location whose credentials the store rejects is Ready=False with the
// store's sentence, and a policy that backs up to it says why no backup ran: the run
// is Failed at once, with that sentence, and creates no backups.
func (s *stories) wrongCredentialsSayWhyNoBackupRan(t *testing.T) {
	ctx := t.Context()
	bsl := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: minio-wrong-credentials
  namespace: holdfast-system
stringData:
  AWS_ACCESS_KEY_ID: holdfast-e2e
  AWS_SECRET_ACCESS_KEY: not-the-password
---
apiVersion: backup.holdfast.dev/v1alpha1
kind: BackupStorageLocation
metadata:
  name: minio-wrong
spec:
  s3:
    bucket: holdfast
    prefix: cluster-b
    endpoint: %s
    region: us-east-1
    forcePathStyle: true
    insecure: true
    credentialsSecretRef:
      name: minio-wrong-credentials
---
apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeBackupPolicy
metadata:
  name: audit-to-minio-wrong
spec:
  selector:
    namespaces: namespace.metadata.name == "audit"
    volumes: has(volume.emptyDir) && pod.metadata.labels[?"backup"].orValue("") == "true"
  storageLocation: minio-wrong
`, s.minio.Endpoint)
	if _, err := s.e.Kubectl(ctx, bsl, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.Kubectl(ctx, "", "wait", "--for=condition=Ready=false", "bsl/minio-wrong", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	out, err := s.e.Kubectl(ctx, "", "get", "bsl", "minio-wrong", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	const sentence = "rejected the credentials for bucket"
	if !strings.Contains(out, "False") || !strings.Contains(out, sentence) {
		t.Errorf("kubectl get bsl minio-wrong -o wide:\n%s", out)
	}

	previous, err := s.e.StartRun(ctx, "audit-to-minio-wrong", "wrong-1")
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.e.WaitRunEnded(ctx, "audit-to-minio-wrong", "wrong-1", previous)
	if err != nil {
		t.Fatal(err)
	}
	lr := run.Policy.Status.LastRun
	if lr.Outcome != backupv1alpha1.RunOutcomeFailed || lr.VolumesTotal != 0 || lr.VolumesSkipped != 1 ||
		!strings.Contains(lr.Message, `no volume was backed up: storage location "minio-wrong" is not Ready: `) || !strings.Contains(lr.Message, sentence) {
		t.Errorf("last run: %+v", lr)
	}
	if len(run.Backups) != 0 {
		t.Errorf("%d backups created for a run to a location that does not work", len(run.Backups))
	}
	out, err = s.e.Kubectl(ctx, "", "describe", "vbp", "audit-to-minio-wrong")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"StorageLocationNotReady", sentence, "RunFailed", "Outcome:", "Failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl describe vbp audit-to-minio-wrong lacks %q:\n%s", want, out)
		}
	}
	if t.Failed() {
		return
	}
	s.e.Show("A policy whose storage location rejects its credentials says why no backup ran:", grepLines(out, "Message")+"\n"+grepLines(out, "RunFailed"))
}

// The agent pod is deleted (a node drain, an upgrade) while a backup is in flight: the
// DaemonSet starts a new one, which fails the interrupted backup with the documented
// sentence and carries out the run's other backups; nothing stays InProgress, and the
// next run backs up every volume. MinIO is frozen meanwhile so that the backup is
// surely still in flight when the pod goes.
func (s *stories) agentPodDeletedMidBackup(t *testing.T) {
	ctx := t.Context()
	thaw, previous, _ := s.inFlightWithMinIOFrozen(t, "agent-restart")
	// MinIO thaws once the old agent is gone, so that the new one finds it working.
	if err := s.e.RestartAgent(ctx, thaw); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.WaitRunEnded(ctx, "all-to-minio", "agent-restart", previous)
	if err != nil {
		t.Fatal(err)
	}
	const restarted = "the agent restarted while this volume was being moved; the work did not finish"
	var interrupted *backupv1alpha1.PodVolumeBackup
	for i, b := range run.Backups {
		switch {
		case b.Status.Phase == backupv1alpha1.RunFailed && b.Status.Message == restarted:
			interrupted = &run.Backups[i]
		case b.Status.Phase != backupv1alpha1.RunCompleted:
			t.Errorf("%s/%s: %s %q; want Completed, or Failed with %q", b.Namespace, b.Name, b.Status.Phase, b.Status.Message, restarted)
		}
	}
	if interrupted == nil {
		t.Fatalf("no backup failed with %q although one was in flight when the agent went", restarted)
	}
	if o := run.Policy.Status.LastRun.Outcome; o != backupv1alpha1.RunOutcomePartiallyFailed && o != backupv1alpha1.RunOutcomeFailed {
		t.Errorf("run outcome %s", o)
	}
	out, err := s.e.Kubectl(ctx, "", "-n", interrupted.Namespace, "describe", "pvb", interrupted.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, restarted) || !strings.Contains(out, "BackupFailed") {
		t.Errorf("kubectl describe pvb %s does not say what happened:\n%s", interrupted.Name, out)
	}
	s.nextRunBacksUpEverything(t, "after-agent-restart")
}

// inFlightWithMinIOFrozen freezes MinIO, starts a run of all-to-minio with token and
// returns once one of its backups is InProgress (and so stays): the function that
// thaws MinIO, the run before and this run's name.
func (s *stories) inFlightWithMinIOFrozen(t *testing.T, token string) (thaw func(), previous, run string) {
	t.Helper()
	thaw, err := s.e.FreezeMinIO()
	t.Cleanup(thaw)
	if err != nil {
		t.Fatal(err)
	}
	if previous, err = s.e.StartRun(t.Context(), "all-to-minio", token); err != nil {
		t.Fatal(err)
	}
	if run, err = s.e.WaitBackupInProgress(t.Context(), "all-to-minio", token, previous); err != nil {
		t.Fatal(err)
	}
	return thaw, previous, run
}

// nextRunBacksUpEverything runs all-to-minio again and expects all five volumes
// backed up.
func (s *stories) nextRunBacksUpEverything(t *testing.T, token string) {
	t.Helper()
	next, err := s.e.RunPolicyNamed(t.Context(), "all-to-minio", token)
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Backups) != 5 {
		t.Errorf("the next run backed up %d volumes, want 5", len(next.Backups))
	}
}

// MinIO goes away while a backup is in flight and comes back later: the interrupted
// backup fails with the store's sentence, the rest of the run ends once the store is
// back, and the next run backs up every volume.
func (s *stories) minIOStoppedMidRunThenStarted(t *testing.T) {
	ctx := t.Context()
	_, previous, runName := s.inFlightWithMinIOFrozen(t, "minio-down")
	inFlight, err := s.e.backupsOfRun(ctx, runName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.e.StopMinIO(ctx); err != nil {
		t.Fatal(err)
	}
	// The backups that were in flight fail with the store's sentence while it is down.
	var failed []string
	for _, b := range inFlight {
		if b.Status.Phase != backupv1alpha1.RunInProgress {
			continue
		}
		got, err := s.e.WaitBackupFinished(ctx, &b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase != backupv1alpha1.RunFailed || !strings.Contains(got.Status.Message, "cannot be reached") {
			t.Errorf("%s/%s with the store gone: %s %q; want Failed, the store cannot be reached", got.Namespace, got.Name, got.Status.Phase, got.Status.Message)
		}
		failed = append(failed, got.Name)
	}
	if len(failed) == 0 {
		t.Fatal("no backup of the run was InProgress when MinIO was stopped")
	}
	if err := s.e.StartMinIOAgain(ctx, MinIOLocation); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.WaitRunEnded(ctx, "all-to-minio", "minio-down", previous)
	if err != nil {
		t.Fatal(err)
	}
	if o := run.Policy.Status.LastRun.Outcome; o == backupv1alpha1.RunOutcomeSucceeded || int(run.Policy.Status.LastRun.VolumesFailed) < len(failed) {
		t.Errorf("run %+v; want the interrupted backups %v counted as failed", run.Policy.Status.LastRun, failed)
	}
	s.nextRunBacksUpEverything(t, "after-minio-down")
}

// samplePolicyAdmittedAsShipped applies the sample policy file of config/samples as it
// is: nightly at 01:30 in Europe/Paris. The webhook in the cluster runs from the
// image, which has no zoneinfo files, so it must know the zone from the binary; the
// controller must be Ready with its next run at 01:30 Paris time. The sample has the
// stories' policy name, so the stories' policy is put back afterwards.
func (s *stories) samplePolicyAdmittedAsShipped(t *testing.T) {
	ctx := t.Context()
	var p backupv1alpha1.VolumeBackupPolicy
	err := s.e.Client.Get(ctx, client.ObjectKey{Name: PolicyName}, &p)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	existed, location := err == nil, p.Spec.StorageLocation
	t.Cleanup(func() {
		ctx := context.Background()
		if existed {
			err = s.e.ApplyPolicy(ctx, location)
		} else { // the story ran alone (go test -run TestStories/SamplePolicyAdmittedAsShipped)
			err = client.IgnoreNotFound(s.e.Client.Delete(ctx, &backupv1alpha1.VolumeBackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: PolicyName}}))
		}
		if err != nil {
			t.Errorf("putting the stories' policy back: %v", err)
		}
	})
	const sample = "config/samples/backup_v1alpha1_volumebackuppolicy.yaml"
	if _, err := s.e.Kubectl(ctx, "", "apply", "--server-side", "-f", sample); err != nil {
		t.Fatalf("the cluster refused the sample policy: %v", err)
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := s.e.Client.Get(ctx, client.ObjectKey{Name: PolicyName}, &p); err != nil {
			return false, err
		}
		ready := apimeta.FindStatusCondition(p.Status.Conditions, backupv1alpha1.ConditionReady)
		last = fmt.Sprintf("generation %d, observed %d, Ready %+v, next run %v", p.Generation, p.Status.ObservedGeneration, ready, p.Status.NextScheduleTime)
		return p.Spec.Schedule != nil && p.Status.ObservedGeneration == p.Generation && ready != nil &&
			ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == p.Generation && p.Status.NextScheduleTime != nil, nil
	})
	if err != nil {
		t.Fatalf("the sample policy did not become Ready: %v (%s)", err, last)
	}
	if next := p.Status.NextScheduleTime.In(paris); next.Hour() != 1 || next.Minute() != 30 {
		t.Errorf("next run at %s, want 01:30 Paris time", next.Format(time.RFC3339))
	}
	if _, err := s.e.show(ctx, "The sample policy as shipped, admitted and Ready:", "get", "vbp", PolicyName, "-o", "wide"); err != nil {
		t.Error(err)
	}
}
