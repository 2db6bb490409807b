package e2e

// The disaster-recovery stories: a namespace deleted by mistake, a cluster lost with
// everything in it, and a recovery identity that is not the right one. Their backups
// go to a store outside the cluster, which outlives it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	miniogo "github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/minio"
)

// The store outside the cluster. MinIO runs as a process of the test on the host and
// listens on offsiteIP, the one address of offsiteDevice, a network device the test
// makes (a bridge without ports: the kernel has no dummy devices here). Pods reach it
// through the node's routing, as they reach any address outside the cluster: their
// default route is the CNI bridge, and the host delivers offsiteIP locally. The
// address sits next to the pod range (10.244.0.0/24), which the local cluster already
// takes, so no traffic leaves the machine. MinIO and the device outlive the cluster;
// the test removes both when the stories end, also when they fail, and a device left
// by a test binary that was killed is removed when the next one starts.
const (
	offsiteDevice   = "holdfast-s3"
	offsiteIP       = "10.244.1.1"
	offsiteBucket   = "offsite"
	offsitePrefix   = "holdfast"
	offsiteLocation = "offsite"
)

// offsiteStore is the running store, the recovery identity whose recipient the
// location names, and another identity.
type offsiteStore struct {
	server *minio.Server
	client *miniogo.Client
	// identity and wrongIdentity are age identity files, as an administrator keeps
	// them offline; recipient is identity's public key.
	identity, wrongIdentity, recipient string
}

// offsiteStore starts the store the first time a story needs it, for the rest of the
// stories.
func (s *stories) offsiteStore(t *testing.T) *offsiteStore {
	t.Helper()
	if s.store != nil {
		return s.store
	}
	store, stop, err := startOffsiteStore(s.e.Log)
	// On the stories' test, so that it outlives this story and goes when they end.
	s.parent.Cleanup(func() {
		if err := stop(); err != nil {
			s.parent.Errorf("removing the offsite store: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	s.store = store
	return store
}

// startOffsiteStore makes the device, starts MinIO on it and writes two age
// identities. The returned function removes whatever it made, also after an error.
func startOffsiteStore(logf func(string, ...any)) (*offsiteStore, func() error, error) {
	var undo []func() error
	stop := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	if err := removeOffsiteDevice(); err != nil {
		return nil, stop, err
	}
	for i, args := range [][]string{
		{"link", "add", offsiteDevice, "type", "bridge"},
		// No IPv6 link-local address: the device holds the one IPv4 address only.
		{"link", "set", "dev", offsiteDevice, "addrgenmode", "none"},
		{"addr", "add", offsiteIP + "/32", "dev", offsiteDevice},
		{"link", "set", offsiteDevice, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, stop, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		if i == 0 {
			undo = append(undo, removeOffsiteDevice)
		}
	}
	server, err := minio.New(minio.Options{Host: offsiteIP, Buckets: []string{offsiteBucket}})
	if err != nil {
		return nil, stop, err
	}
	undo = append(undo, server.Close)
	mc, err := server.Client()
	if err != nil {
		return nil, stop, err
	}
	dir, err := os.MkdirTemp("", "holdfast-e2e-identities-")
	if err != nil {
		return nil, stop, err
	}
	undo = append(undo, func() error { return os.RemoveAll(dir) })
	store := &offsiteStore{server: server, client: mc}
	for _, f := range []struct {
		path *string
		name string
	}{{&store.identity, "identity.txt"}, {&store.wrongIdentity, "another-identity.txt"}} {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, stop, err
		}
		*f.path = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.path, []byte("# created by the e2e tests\n"+id.String()+"\n"), 0o600); err != nil {
			return nil, stop, err
		}
		if store.recipient == "" {
			store.recipient = id.Recipient().String()
		}
	}
	logf("offsite store: MinIO on the host at %s (device %s), outside the cluster; recovery recipient %s", server.Endpoint, offsiteDevice, store.recipient)
	return store, stop, nil
}

// removeOffsiteDevice deletes the device if it exists.
func removeOffsiteDevice() error {
	if exec.Command("ip", "link", "show", offsiteDevice).Run() != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "del", offsiteDevice).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link del %s: %w: %s", offsiteDevice, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// applyOffsiteLocation applies manifests/offsite.yaml for the store, as kept in Git,
// and waits until the location is Ready.
func (s *stories) applyOffsiteLocation(ctx context.Context, store *offsiteStore) error {
	m, err := s.e.Manifest("offsite.yaml")
	if err != nil {
		return err
	}
	m = strings.NewReplacer("OFFSITE_ENDPOINT", store.server.Endpoint, "OFFSITE_ACCESS_KEY", store.server.AccessKey,
		"OFFSITE_SECRET_KEY", store.server.SecretKey, "RECOVERY_RECIPIENT", store.recipient).Replace(m)
	s.e.Log("applying the offsite storage location and its credentials (manifests/offsite.yaml), with the recovery recipient")
	if _, err := s.e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	return s.e.WaitLocationReady(ctx, offsiteLocation)
}

// createIdentitySecret runs the command a repository stalled on its key names.
func (s *stories) createIdentitySecret(ctx context.Context, file string) error {
	s.e.Log("kubectl -n holdfast-system create secret generic holdfast-recovery-identity --from-file=identity=%s", filepath.Base(file))
	_, err := s.e.Kubectl(ctx, "", "-n", "holdfast-system", "create", "secret", "generic", "holdfast-recovery-identity", "--from-file=identity="+file)
	return err
}

func (s *stories) deleteIdentitySecret(ctx context.Context) error {
	_, err := s.e.Kubectl(ctx, "", "-n", "holdfast-system", "delete", "secret", "holdfast-recovery-identity", "--ignore-not-found")
	return err
}

// object is what a listing of the store says of one object.
type object struct {
	Key, ETag string
	Size      int64
	Modified  time.Time
}

// list lists the objects of the bucket whose names start with each prefix.
func (o *offsiteStore) list(ctx context.Context, prefixes ...string) ([]object, error) {
	var out []object
	for _, p := range prefixes {
		for obj := range o.client.ListObjects(ctx, offsiteBucket, miniogo.ListObjectsOptions{Prefix: p, Recursive: true}) {
			if obj.Err != nil {
				return nil, obj.Err
			}
			out = append(out, object{Key: obj.Key, ETag: obj.ETag, Size: obj.Size, Modified: obj.LastModified})
		}
	}
	return out, nil
}

// repositoryObjects lists what the store holds of namespace ns: its repositories and
// their key escrows (<prefix>/<uploader>/<ns>/ and <prefix>/<uploader>/<ns>.key.age).
func (o *offsiteStore) repositoryObjects(ctx context.Context, ns string) ([]object, error) {
	return o.list(ctx, offsitePrefix+"/kopia/"+ns+"/", offsitePrefix+"/kopia/"+ns+".key.age",
		offsitePrefix+"/restic/"+ns+"/", offsitePrefix+"/restic/"+ns+".key.age")
}

// namespaceDeletedRestoredFromTheStore: the wiki is backed up, its namespace deleted
// (its PodVolumeBackups and BackupRepository go with it; the snapshots stay in the
// store), and applied again from the same manifests: namespace, VolumeRestore, then the
// Deployment. The wiki's pod waits in restore-wait and starts on its data, and the next
// backup continues the earlier namespace's chain. On the way, an administrator who
// forgets the namespace's adopt-backups annotation is told which earlier namespace the
// store holds backups of, and how to adopt them, before any pod starts empty.
func (s *stories) namespaceDeletedRestoredFromTheStore(t *testing.T) {
	ctx := t.Context()
	store := s.offsiteStore(t)
	if err := s.applyOffsiteLocation(ctx, store); err != nil {
		t.Fatal(err)
	}
	if err := s.e.DeployWiki(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.e.ApplyWikiPolicy(ctx, offsiteLocation); err != nil {
		t.Fatal(err)
	}
	run, err := s.e.RunPolicyNamed(ctx, WikiPolicy, "wiki-1")
	if err != nil {
		t.Fatal(err)
	}
	backup := run.Backup(WikiVolume)
	if backup == nil || backup.Status.SnapshotID == "" {
		t.Fatalf("no snapshot of the wiki's pages: %+v", run.Backups)
	}
	sums, err := s.e.ChecksumsIn(ctx, WikiNamespace, "deployment/wiki", WikiDir)
	if err != nil {
		t.Fatal(err)
	}
	earlier := &corev1.Namespace{}
	if err := s.e.Client.Get(ctx, client.ObjectKey{Name: WikiNamespace}, earlier); err != nil {
		t.Fatal(err)
	}
	brepo := &backupv1alpha1.BackupRepository{}
	if err := s.e.Client.Get(ctx, client.ObjectKey{Namespace: WikiNamespace, Name: backup.Spec.Repository}, brepo); err != nil {
		t.Fatal(err)
	}
	keySecret := brepo.Status.KeySecretName

	if err := s.e.DeleteNamespace(ctx, WikiNamespace); err != nil {
		t.Fatal(err)
	}
	// Gone with the namespace: its backups and repository objects. Left: the key
	// Secret in holdfast-system, and the repository, its snapshots and its key escrow
	// in the store.
	var pvbs backupv1alpha1.PodVolumeBackupList
	if err := s.e.Client.List(ctx, &pvbs, client.InNamespace(WikiNamespace)); err != nil || len(pvbs.Items) != 0 {
		t.Errorf("PodVolumeBackups left in the deleted namespace: %d (%v)", len(pvbs.Items), err)
	}
	if err := s.e.Client.Get(ctx, client.ObjectKey{Namespace: "holdfast-system", Name: keySecret}, &corev1.Secret{}); err != nil {
		t.Errorf("the key Secret %s: %v", keySecret, err)
	}
	objs, err := store.repositoryObjects(ctx, WikiNamespace)
	if err != nil {
		t.Fatal(err)
	}
	if !hasObject(objs, offsitePrefix+"/kopia/"+WikiNamespace+".key.age") || !hasObject(objs, offsitePrefix+"/kopia/"+WikiNamespace+"/kopia.repository") {
		t.Fatalf("the store lost the wiki's repository or its key escrow with its namespace: %v", objs)
	}

	// The namespace applied again without the annotation: nothing of the earlier
	// namespace may be restored, and the restore says so before the application runs.
	m, err := s.e.Manifest("wiki-namespace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bare := strings.Replace(m, "  annotations:\n    "+backupv1alpha1.AnnotationAdoptBackups+": \"*\"\n", "", 1)
	if bare == m {
		t.Fatal("wiki-namespace.yaml does not carry the adopt-backups annotation as the story expects")
	}
	if _, err := s.e.Kubectl(ctx, bare, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	msg, err := s.e.ApplyRestoreFirst(ctx, WikiNamespace, "wiki-restore.yaml", WikiRestore)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"taken in an earlier namespace wiki (uid " + string(earlier.UID) + ")",
		backupv1alpha1.AnnotationAdoptBackups + ": <uid> (or *) on namespace wiki", "pods created now do not wait for those"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the restore's message lacks %q: %s", want, msg)
		}
	}
	if t.Failed() {
		return
	}
	s.e.Show("Without the adopt-backups annotation, the restore says what the store holds and waits:", msg)

	// As in Git: the namespace with its annotation, the restore, then the wiki.
	restored, err := s.e.RestoreWiki(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkRestoredPod(t, restored, "wiki: found existing data")
	got, err := s.e.ChecksumsIn(ctx, WikiNamespace, "deployment/wiki", WikiDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != sums {
		t.Errorf("restored pages differ:\n got %s\nwant %s", got, sums)
	}
	if v := restored.Restore.Status.Volumes; len(v) != 1 || v[0].SnapshotID != backup.Status.SnapshotID || restored.Restore.Status.VolumesCompleted != 1 {
		t.Errorf("VolumeRestore status %+v, want snapshot %s restored", restored.Restore.Status, backup.Status.SnapshotID)
	}
	s.wikiSums = got

	// The next backup continues the earlier namespace's chain.
	next, err := s.e.RunPolicyNamed(ctx, WikiPolicy, "wiki-2")
	if err != nil {
		t.Fatal(err)
	}
	continuesChain(t, next.Backup(WikiVolume), backup.Status.SnapshotID)
}

// checkRestoredPod fails the test unless the pod waited in restore-wait, which exited
// 0, and the application then found its data (its log says logLine).
func checkRestoredPod(t *testing.T, r *Restored, logLine string) {
	t.Helper()
	if ic := r.Pod.Spec.InitContainers; len(ic) == 0 || ic[0].Name != restorewait.ContainerName {
		t.Errorf("pod %s has no restore-wait init container: %v", r.Pod.Name, ic)
	}
	if st := r.Pod.Status.InitContainerStatuses; len(st) == 0 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
		t.Errorf("pod %s: restore-wait did not exit 0: %+v", r.Pod.Name, st)
	}
	if !strings.Contains(r.Log, logLine) {
		t.Errorf("pod %s did not start on restored data; its log:\n%s", r.Pod.Name, r.Log)
	}
}

// continuesChain fails the test unless b is an incremental backup made from the
// snapshot parent.
func continuesChain(t *testing.T, b *backupv1alpha1.PodVolumeBackup, parent string) {
	t.Helper()
	if b == nil {
		t.Fatal("no backup of the volume in the run")
	}
	if b.Spec.ParentSnapshotID != parent {
		t.Errorf("%s/%s: spec.parentSnapshotID %q, want the earlier snapshot %s", b.Namespace, b.Name, b.Spec.ParentSnapshotID, parent)
	}
	incremental(t, b, 64<<10)
}

func hasObject(objs []object, key string) bool {
	for _, o := range objs {
		if o.Key == key {
			return true
		}
	}
	return false
}

// The crm application of the total-loss story (manifests/crm*.yaml).
const (
	crmNamespace      = "crm"
	crmRestore        = "crm-from-latest"
	contactsVolume    = "data"
	contactsDir       = "/var/lib/contacts"
	attachmentsVolume = "files"
	attachmentsDir    = "/files"
)

// clusterLostRestoredFromTheStore: the crm application is backed up with restic (a
// StatefulSet's local PV) and kopia (a Deployment's emptyDir) to the store outside the
// cluster, whose location names a recovery recipient. Then the cluster is lost as
// `make cluster-down` loses it: etcd with every Secret and repository key, the
// kubelet's state, the volumes. A new cluster comes up, Holdfast is installed as
// before, the location (from Git) and the identity Secret are applied, then the
// namespace, the VolumeRestore and the application: the keys are recovered from their
// escrow, the pods wait in restore-wait and start on their data, and the next run
// continues both chains. It logs the time from "cluster up" to "data verified".
func (s *stories) clusterLostRestoredFromTheStore(t *testing.T) {
	ctx := t.Context()
	store := s.offsiteStore(t)
	if err := s.applyOffsiteLocation(ctx, store); err != nil {
		t.Fatal(err)
	}
	if err := s.deployCRM(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.e.Apply(ctx, "crm-policies.yaml"); err != nil {
		t.Fatal(err)
	}
	parents := map[string]string{}
	for _, p := range []struct{ policy, volume string }{{"offsite-restic", contactsVolume}, {"offsite-kopia", attachmentsVolume}} {
		run, err := s.e.RunPolicyNamed(ctx, p.policy, p.policy+"-1")
		if err != nil {
			t.Fatal(err)
		}
		b := run.Backup(p.volume)
		if len(run.Backups) != 1 || b == nil || b.Status.SnapshotID == "" {
			t.Fatalf("%s backed up %+v", p.policy, run.Backups)
		}
		parents[p.volume] = b.Status.SnapshotID
	}
	sums := map[string]string{}
	for _, w := range []struct{ workload, dir string }{{"statefulset/contacts", contactsDir}, {"deployment/attachments", attachmentsDir}} {
		out, err := s.e.ChecksumsIn(ctx, crmNamespace, w.workload, w.dir)
		if err != nil {
			t.Fatal(err)
		}
		sums[w.workload] = out
	}

	// The cluster is lost.
	c := s.e.Cluster
	s.e.Log("losing the cluster as `make cluster-down` does: every process, etcd with every Secret and repository key, the kubelet's state, the volumes")
	down, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err := Teardown(down, c)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	s.rebuilt = true // from here on, the stories' cluster is the new one
	for _, ns := range []string{crmNamespace, WikiNamespace} {
		objs, err := store.repositoryObjects(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) == 0 {
			t.Fatalf("the store holds nothing of namespace %s", ns)
		}
	}

	// A new cluster, Holdfast installed as before.
	if err := PrepareBackupsDir(s.e.Log); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Up(ctx); err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	up := time.Now()
	e, err := NewEnv(c, s.e.Log, s.e.Show)
	if err != nil {
		t.Fatal(err)
	}
	s.e = e
	suite.SetEnv(e)
	if err := e.Install(ctx); err != nil {
		t.Fatal(err)
	}
	installed := time.Now()

	// What the administrator kept outside the cluster: the location and its
	// credentials (Git, a secret manager), and the recovery identity (offline).
	if err := s.applyOffsiteLocation(ctx, store); err != nil {
		t.Fatal(err)
	}
	if err := s.createIdentitySecret(ctx, store.identity); err != nil {
		t.Fatal(err)
	}
	located := time.Now()

	// The application, from Git: namespace, restore, then the workloads. The local PV's
	// directory is the new node's disk, empty.
	if err := os.MkdirAll(e.crmPVPath(), 0o755); err != nil {
		t.Fatal(err)
	}
	vr, err := e.RestoreNamespace(ctx, crmNamespace, "crm-namespace.yaml", "crm-restore.yaml", crmRestore, "crm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		workload, app, dir string
	}{{"statefulset/contacts", "contacts", contactsDir}, {"deployment/attachments", "attachments", attachmentsDir}} {
		pod, err := e.PodIn(ctx, crmNamespace, map[string]string{"app": w.app}, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		logs, err := e.Kubectl(ctx, "", "-n", crmNamespace, "logs", pod.Name, "-c", w.app)
		if err != nil {
			t.Fatal(err)
		}
		checkRestoredPod(t, &Restored{Pod: pod, Restore: vr, Log: logs}, w.app+": found existing data")
		got, err := e.ChecksumsIn(ctx, crmNamespace, w.workload, w.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != sums[w.workload] {
			t.Errorf("%s: restored data differs:\n got %s\nwant %s", w.workload, got, sums[w.workload])
		}
	}
	verified := time.Now()
	if vr.Status.VolumesCompleted != 2 || vr.Status.VolumesFailed != 0 {
		t.Errorf("VolumeRestore status %+v, want 2 volumes restored", vr.Status)
	}
	e.Log("total loss: from `cluster up` to data verified in %.1fs: cluster start %.1fs, Holdfast installed %.1fs, location and identity applied %.1fs, namespace, restore and application applied and data verified %.1fs",
		verified.Sub(start).Seconds(), up.Sub(start).Seconds(), installed.Sub(up).Seconds(), located.Sub(installed).Seconds(), verified.Sub(located).Seconds())
	if t.Failed() {
		return
	}

	// Each repository's key came back from its escrow, and the event says so.
	var secrets corev1.SecretList
	if err := e.Client.List(ctx, &secrets, client.InNamespace("holdfast-system"), client.MatchingLabels{"backup.holdfast.dev/repository-namespace": crmNamespace}); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 2 {
		t.Errorf("%d key Secrets of namespace crm, want 2 (kopia and restic)", len(secrets.Items))
	}
	for _, sec := range secrets.Items {
		if !strings.HasPrefix(sec.Annotations["backup.holdfast.dev/recovered-from"], "s3://"+offsiteBucket+"/"+offsitePrefix+"/") {
			t.Errorf("key Secret %s: annotations %v, want recovered-from its escrow", sec.Name, sec.Annotations)
		}
	}
	if _, err := e.show(ctx, "In the new cluster, the repositories found in the store, their keys recovered from the escrow:", "-n", crmNamespace, "get", "brepo", "-o", "wide"); err != nil {
		t.Error(err)
	}
	if out, err := e.Kubectl(ctx, "", "-n", crmNamespace, "get", "events", "--field-selector", "reason=KeyRecovered"); err != nil || strings.Count(out, "Recovered the repository key") != 2 {
		t.Errorf("KeyRecovered events (%v):\n%s", err, out)
	}
	// The identity is needed no more.
	if err := s.deleteIdentitySecret(ctx); err != nil {
		t.Fatal(err)
	}

	// The policies from Git again: the next run continues both chains.
	if err := e.Apply(ctx, "crm-policies.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ policy, volume string }{{"offsite-restic", contactsVolume}, {"offsite-kopia", attachmentsVolume}} {
		run, err := e.RunPolicyNamed(ctx, p.policy, p.policy+"-2")
		if err != nil {
			t.Fatal(err)
		}
		continuesChain(t, run.Backup(p.volume), parents[p.volume])
	}
}

// deployCRM deploys the crm application and waits for its pods.
func (s *stories) deployCRM(ctx context.Context) error {
	s.e.Log("deploying namespace crm: contacts (a StatefulSet on a local PV) and attachments (a Deployment with an emptyDir)")
	if err := os.MkdirAll(s.e.crmPVPath(), 0o755); err != nil {
		return err
	}
	for _, m := range []string{"crm-namespace.yaml", "crm.yaml"} {
		if err := s.e.Apply(ctx, m); err != nil {
			return err
		}
	}
	for _, w := range []string{"statefulset/contacts", "deployment/attachments"} {
		if _, err := s.e.Kubectl(ctx, "", "-n", crmNamespace, "rollout", "status", w, "--timeout=3m"); err != nil {
			return s.e.withPodState(ctx, crmNamespace, err)
		}
	}
	return nil
}

// wrongIdentityRecoversNothing, in the new cluster: the wiki's namespace and restore
// are applied (its repository, in the store since the namespace story, has no key
// Secret here), first without an identity Secret, then with an identity that is not a
// recipient of the location. The repository says what to do, then that the identity
// is wrong, and nothing is written: the store's objects of the wiki are the same, and
// no key Secret exists. With the right identity the key is recovered and the wiki
// comes back with its pages.
func (s *stories) wrongIdentityRecoversNothing(t *testing.T) {
	if !s.rebuilt || s.wikiSums == "" {
		t.Skip("needs the stories NamespaceDeletedRestoredFromTheStore and ClusterLostRestoredFromTheStore before it")
	}
	ctx := t.Context()
	store := s.offsiteStore(t)
	before, err := store.repositoryObjects(ctx, WikiNamespace)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 {
		t.Fatal("the store holds nothing of the wiki")
	}
	if err := s.e.Apply(ctx, "wiki-namespace.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := s.e.Apply(ctx, "wiki-restore.yaml"); err != nil {
		t.Fatal(err)
	}
	repo := "offsite-kopia"
	msg, err := s.waitRepositoryStalled(ctx, WikiNamespace, repo, "KeyRecoveryRequired")
	if err != nil {
		t.Fatal(err)
	}
	if want := "kubectl -n holdfast-system create secret generic holdfast-recovery-identity --from-file=identity=<identity file>"; !strings.Contains(msg, want) {
		t.Errorf("the repository's message lacks %q: %s", want, msg)
	}
	// The restore, which is what the person applied, says it too.
	if err := s.waitRestoreSays(ctx, WikiNamespace, WikiRestore, "create secret generic holdfast-recovery-identity"); err != nil {
		t.Error(err)
	}
	if _, err := s.e.show(ctx, "In a new cluster without the identity Secret, the repository found in the store waits for it:", "-n", WikiNamespace, "get", "brepo", repo, "-o", "wide"); err != nil {
		t.Error(err)
	}
	if _, err := s.e.show(ctx, "The restore says the same:", "-n", WikiNamespace, "get", "vr", WikiRestore, "-o", "wide"); err != nil {
		t.Error(err)
	}

	if err := s.createIdentitySecret(ctx, store.wrongIdentity); err != nil {
		t.Fatal(err)
	}
	msg, err = s.waitRepositoryStalled(ctx, WikiNamespace, repo, "KeyRecoveryFailed")
	if err != nil {
		t.Fatal(err)
	}
	if want := "the identity is not one of the recipients the key was escrowed to"; !strings.Contains(msg, want) {
		t.Errorf("the repository's message lacks %q: %s", want, msg)
	}
	if _, err := s.e.show(ctx, "A wrong recovery identity: the repository is Stalled and says so:", "-n", WikiNamespace, "get", "brepo", repo, "-o", "wide"); err != nil {
		t.Error(err)
	}
	after, err := store.repositoryObjects(ctx, WikiNamespace)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the store's objects of the wiki changed with a wrong identity:\nbefore %v\nafter  %v", before, after)
	}
	var secrets corev1.SecretList
	if err := s.e.Client.List(ctx, &secrets, client.InNamespace("holdfast-system"), client.MatchingLabels{"backup.holdfast.dev/repository-namespace": WikiNamespace}); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Errorf("a key Secret was written with a wrong identity: %s", secrets.Items[0].Name)
	}
	if t.Failed() {
		return
	}

	// The right identity: the key is recovered, and the wiki comes back.
	if err := s.deleteIdentitySecret(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.createIdentitySecret(ctx, store.identity); err != nil {
		t.Fatal(err)
	}
	if err := s.e.WaitRestoreReadyForPods(ctx, WikiNamespace, WikiRestore, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.e.Apply(ctx, "wiki.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.WaitRestoreIn(ctx, WikiNamespace, WikiRestore); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.PodIn(ctx, WikiNamespace, map[string]string{"app": "wiki"}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.e.ChecksumsIn(ctx, WikiNamespace, "deployment/wiki", WikiDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != s.wikiSums {
		t.Errorf("the wiki's pages in the new cluster differ:\n got %s\nwant %s", got, s.wikiSums)
	}
	if err := s.deleteIdentitySecret(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitRepositoryStalled waits until the BackupRepository exists and is Stalled with
// reason, and returns its message.
func (s *stories) waitRepositoryStalled(ctx context.Context, ns, name, reason string) (string, error) {
	brepo := &backupv1alpha1.BackupRepository{}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := s.e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, brepo); err != nil {
			last = err.Error()
			return false, nil
		}
		c := apimeta.FindStatusCondition(brepo.Status.Conditions, backupv1alpha1.ConditionStalled)
		if c == nil {
			last = fmt.Sprintf("conditions %+v", brepo.Status.Conditions)
			return false, nil
		}
		last = c.Reason + ": " + c.Message
		return c.Status == "True" && c.Reason == reason, nil
	})
	if err != nil {
		return "", fmt.Errorf("BackupRepository %s/%s not Stalled with %s: %w (%s)", ns, name, reason, err, last)
	}
	return last, nil
}

// waitRestoreSays waits until the VolumeRestore's Ready message contains text.
func (s *stories) waitRestoreSays(ctx context.Context, ns, name, text string) error {
	vr := &backupv1alpha1.VolumeRestore{}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := s.e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vr); err != nil {
			last = err.Error()
			return false, nil
		}
		if c := apimeta.FindStatusCondition(vr.Status.Conditions, backupv1alpha1.ConditionReady); c != nil {
			last = c.Reason + ": " + c.Message
		}
		return strings.Contains(last, text), nil
	})
	if err != nil {
		return fmt.Errorf("VolumeRestore %s/%s does not say %q: %w (%s)", ns, name, text, err, last)
	}
	return nil
}
