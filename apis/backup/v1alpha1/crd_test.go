package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env, testenv.Options{}) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("decoding %q: %v", doc, err)
	}
	return u
}

// readSamples returns every object of config/samples, the files a new user copies.
func readSamples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "backup_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			if strings.TrimSpace(doc) != "" {
				objs = append(objs, decode(t, doc))
			}
		}
	}
	return objs
}

func TestEverySampleIsAcceptedAndEveryKindHasOne(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)

	kinds := map[string]bool{}
	for _, obj := range readSamples(t) {
		kinds[obj.GetKind()] = true
		if obj.GetNamespace() != "" {
			obj.SetNamespace(ns)
		} else {
			obj.SetName(ns + "-" + obj.GetName())
			t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
		}
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Errorf("sample %s %s was rejected: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	for _, kind := range []string{"BackupStorageLocation", "VolumeBackupPolicy", "BackupRepository",
		"PodVolumeBackup", "VolumeRestore", "PodVolumeRestore"} {
		if !kinds[kind] {
			t.Errorf("config/samples has no %s", kind)
		}
	}
}

func TestSampleDefaultsAreApplied(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)

	policy := decode(t, `
apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeBackupPolicy
metadata: {name: `+ns+`-defaults}
spec:
  storageLocation: default
  schedule: {cron: "0 * * * *"}
  retention: {keepDaily: 7}
`)
	if err := env.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), policy) })
	var got v1.VolumeBackupPolicy
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(policy), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Uploader != v1.UploaderKopia || got.Spec.DeletionPolicy != v1.DeletionRetain ||
		got.Spec.Schedule.TimeZone != "UTC" || got.Spec.Retention.MaxExpirePercent != 50 {
		t.Errorf("defaults not applied: uploader=%q deletionPolicy=%q timeZone=%q maxExpirePercent=%d",
			got.Spec.Uploader, got.Spec.DeletionPolicy, got.Spec.Schedule.TimeZone, got.Spec.Retention.MaxExpirePercent)
	}

	restore := decode(t, `
apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeRestore
metadata: {name: defaults, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: db}}
`)
	if err := env.Client.Create(ctx, restore); err != nil {
		t.Fatal(err)
	}
	var vr v1.VolumeRestore
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(restore), &vr); err != nil {
		t.Fatal(err)
	}
	if !vr.Spec.Source.Latest {
		t.Errorf("a restore without a source should default to latest: true, got %+v", vr.Spec.Source)
	}
	if vr.Spec.RunningPods != v1.RunningPodsSkip || vr.Spec.PendingDeadline == nil || vr.Spec.PendingDeadline.Duration != v1.DefaultPendingDeadline {
		t.Errorf("a restore should default to runningPods: Skip and pendingDeadline: 1h, got %q and %v", vr.Spec.RunningPods, vr.Spec.PendingDeadline)
	}
}

// TestCarelessManifestsAreRejected applies what a person gets wrong when writing YAML by
// hand and checks that the API server says what is wrong, naming the field.
func TestCarelessManifestsAreRejected(t *testing.T) {
	env := testenv.Require(t, env)
	ns := env.Namespace(t, nil)

	bsl := func(spec string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: BackupStorageLocation\nmetadata: {name: " + ns + "-bad}\nspec:\n" + spec
	}
	s3 := func(fields string) string {
		return bsl("  s3:\n    credentialsSecretRef: {name: creds}\n" + fields)
	}
	policy := func(spec string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: VolumeBackupPolicy\nmetadata: {name: " + ns + "-bad}\nspec:\n" + spec
	}
	restore := func(spec string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: bad, namespace: " + ns + "}\nspec:\n" + spec
	}
	pvb := func(spec string) string {
		return "apiVersion: backup.holdfast.dev/v1alpha1\nkind: PodVolumeBackup\nmetadata: {name: bad, namespace: " + ns + "}\nspec:\n" +
			"  node: n1\n  pod: {name: p, uid: u}\n  volume: data\n  storageLocation: default\n  repository: r\n  uploader: kopia\n" + spec
	}

	for _, tc := range []struct {
		name     string
		manifest string
		want     []string
	}{
		{"storage location with both s3 and filesystem",
			bsl("  filesystem: {path: /backups}\n  s3: {bucket: backups, endpoint: minio:9000, credentialsSecretRef: {name: c}}\n"),
			[]string{"spec", "set exactly one of spec.s3 or spec.filesystem"}},
		{"storage location with neither s3 nor filesystem",
			bsl("  probeInterval: 1m\n"),
			[]string{"set exactly one of spec.s3 or spec.filesystem"}},
		{"s3 without credentials",
			bsl("  s3: {bucket: backups, endpoint: minio:9000}\n"),
			[]string{"spec.s3.credentialsSecretRef", "Required value"}},
		{"s3 bucket with capitals and underscore",
			s3("    bucket: My_Backups\n    endpoint: minio:9000\n"),
			[]string{"spec.s3.bucket", "bucket must be an S3 bucket name"}},
		{"s3 prefix with slashes around it",
			s3("    bucket: backups\n    endpoint: minio:9000\n    prefix: /cluster-a/\n"),
			[]string{"spec.s3.prefix", "prefix must not start or end with '/'"}},
		{"s3 without endpoint or region",
			s3("    bucket: backups\n"),
			[]string{"spec.s3", "set endpoint, or region for AWS S3"}},
		{"s3 insecure with a CA bundle",
			s3("    bucket: backups\n    endpoint: minio:9000\n    insecure: true\n    caBundle: Zm9v\n"),
			[]string{"spec.s3", "caBundle is for TLS; it cannot be combined with insecure: true"}},
		{"s3 endpoint written as a URL",
			s3("    bucket: backups\n    endpoint: https://minio:9000\n"),
			[]string{"spec.s3.endpoint", "endpoint is host[:port] without a scheme"}},
		{"filesystem path that is relative",
			bsl("  filesystem: {path: backups}\n"),
			[]string{"spec.filesystem.path", "path must be absolute"}},
		{"policy without a storage location",
			policy("  uploader: kopia\n"),
			[]string{"spec.storageLocation", "Required value"}},
		{"policy with an unknown uploader",
			policy("  storageLocation: default\n  uploader: borg\n"),
			[]string{"spec.uploader", `Unsupported value: "borg"`, `"kopia"`, `"restic"`}},
		{"cron with six fields (seconds)",
			policy("  storageLocation: default\n  schedule: {cron: \"0 30 1 * * *\"}\n"),
			[]string{"spec.schedule.cron", "cron must have exactly 5 fields"}},
		{"cron macro",
			policy("  storageLocation: default\n  schedule: {cron: \"@every 1h\"}\n"),
			[]string{"spec.schedule.cron", "cron must have exactly 5 fields"}},
		{"time zone that is not a zone name",
			policy("  storageLocation: default\n  schedule: {cron: \"0 1 * * *\", timeZone: \"UTC+2 summer\"}\n"),
			[]string{"spec.schedule.timeZone", "timeZone must be an IANA time zone name"}},
		{"jitter over a day",
			policy("  storageLocation: default\n  schedule: {cron: \"0 1 * * *\", jitter: 48h}\n"),
			[]string{"spec.schedule.jitter", "jitter must be between 0s and 24h"}},
		{"negative retention",
			policy("  storageLocation: default\n  retention: {keepDaily: -1}\n"),
			[]string{"spec.retention.keepDaily", "should be greater than or equal to 0"}},
		{"retention that keeps nothing",
			policy("  storageLocation: default\n  retention: {keepLast: 0}\n"),
			[]string{"spec.retention", "retention must keep something"}},
		{"unknown deletion policy",
			policy("  storageLocation: default\n  deletionPolicy: Purge\n"),
			[]string{"spec.deletionPolicy", `Unsupported value: "Purge"`}},
		{"selector longer than the cap",
			policy("  storageLocation: default\n  selector: {volumes: \"" + strings.Repeat("true && ", 600) + "true\"}\n"),
			[]string{"spec.selector.volumes", "Too long"}},
		{"restore that overwrites running pods by another word",
			restore("  podSelector: {}\n  runningPods: Always\n"),
			[]string{"spec.runningPods", `Unsupported value: "Always"`, `"Skip"`, `"Overwrite"`}},
		{"restore pending deadline shorter than a minute",
			restore("  podSelector: {}\n  pendingDeadline: 10s\n"),
			[]string{"spec.pendingDeadline", "pendingDeadline must be between 1m and 720h"}},
		{"restore with two sources",
			restore("  podSelector: {matchLabels: {app: db}}\n  source: {latest: true, podVolumeBackup: b1}\n  volumes: [{name: data}]\n"),
			[]string{"spec.source", "source must set exactly one of latest: true, before or podVolumeBackup"}},
		{"restore with latest: false and nothing else",
			restore("  podSelector: {matchLabels: {app: db}}\n  source: {latest: false}\n"),
			[]string{"spec.source", "source must set exactly one of"}},
		{"restore of a named backup into every volume",
			restore("  podSelector: {matchLabels: {app: db}}\n  source: {podVolumeBackup: b1}\n"),
			[]string{"spec", "source.podVolumeBackup names the backup of one volume"}},
		{"restore without a pod or claim selector",
			restore("  source: {latest: true}\n"),
			[]string{"set exactly one of spec.podSelector", "spec.claimSelector"}},
		{"restore with both a pod and a claim selector",
			restore("  podSelector: {}\n  claimSelector: {matchLabels: {app: vault}}\n"),
			[]string{"set exactly one of spec.podSelector", "spec.claimSelector"}},
		{"restore with a volume listed twice",
			restore("  podSelector: {}\n  volumes: [{name: data}, {name: data}]\n"),
			[]string{"spec.volumes[1]", "Duplicate value"}},
		{"partial restore of an absolute path",
			restore("  podSelector: {}\n  paths: [/etc/passwd]\n"),
			[]string{"spec.paths[0]", "must be a path relative to the volume's root"}},
		{"partial restore of a path that climbs out",
			restore("  podSelector: {}\n  paths: [data, data/../../etc]\n"),
			[]string{"spec.paths[1]", "no empty, . or .. segment"}},
		{"partial restore of a path with an empty segment",
			restore("  podSelector: {}\n  paths: [data//x]\n"),
			[]string{"spec.paths[0]", "must be a path relative to the volume's root"}},
		{"partial restore of a path with a . segment",
			restore("  podSelector: {}\n  paths: [./data]\n"),
			[]string{"spec.paths[0]", "must be a path relative to the volume's root"}},
		{"partial restore of a path with a trailing slash",
			restore("  podSelector: {}\n  paths: [data/]\n"),
			[]string{"spec.paths[0]", "no trailing /"}},
		{"partial restore of an empty path",
			restore("  podSelector: {}\n  paths: ['']\n"),
			[]string{"spec.paths[0]", "at least 1 chars long"}},
		{"partial restore of a path too long",
			restore("  podSelector: {}\n  paths: [" + strings.Repeat("a", 1025) + "]\n"),
			[]string{"spec.paths[0]", "Too long"}},
		{"partial restore of too many paths",
			restore("  podSelector: {}\n  paths: [" + manyPaths(65) + "]\n"),
			[]string{"spec.paths", "must have at most 64 items"}},
		{"partial restore of a volume's path that climbs out",
			restore("  podSelector: {}\n  volumes: [{name: data, paths: [ok, ..]}]\n"),
			[]string{"spec.volumes[0].paths[1]", "must be a path relative to the volume's root"}},
		{"redirected restore into a sub-path that climbs out",
			restore("  podSelector: {}\n  target: {subPath: restored/../../x}\n"),
			[]string{"spec.target.subPath", "must be a path relative to the volume's root"}},
		{"redirected restore into an absolute sub-path",
			restore("  podSelector: {}\n  target: {subPath: /restored}\n"),
			[]string{"spec.target.subPath", "must be a path relative to the volume's root"}},
		{"redirected restore with an empty target",
			restore("  podSelector: {}\n  target: {}\n"),
			[]string{"spec.target.subPath", "Required value"}},
		{"restore from a source path that climbs out",
			restore("  podSelector: {}\n  volumes: [{name: data, from: /pvc/../x}]\n"),
			[]string{"spec.volumes[0].from", "from must be a source path"}},
		{"restore from something that is neither a source path nor a claim name",
			restore("  podSelector: {}\n  volumes: [{name: data, from: 'Data DB'}]\n"),
			[]string{"spec.volumes[0].from", "or a claim name"}},
		{"backup with a relative source path",
			pvb("  sourcePath: pvc/data\n"),
			[]string{"spec.sourcePath", "sourcePath must start with '/'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(ctxFor(t), decode(t, tc.manifest))
			if err == nil {
				t.Fatalf("accepted; want a rejection mentioning %q", tc.want)
			}
			t.Logf("rejected: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("rejection %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

func manyPaths(n int) string {
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("dir%d", i)
	}
	return strings.Join(paths, ", ")
}

// TestPartialAndRedirectedRestoresAreAccepted: the rules on paths reject only what could
// leave the volume; names with dots, spaces and deep paths are fine.
func TestPartialAndRedirectedRestoresAreAccepted(t *testing.T) {
	env := testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	vr := decode(t, "apiVersion: backup.holdfast.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: partial, namespace: "+ns+"}\nspec:\n"+
		"  podSelector: {}\n  paths: [data/2026, config.yaml, .hidden, 'a b/..c/d..', '"+strings.Repeat("a/", 511)+"b']\n"+
		"  volumes: [{name: logs, paths: [app.log]}, {name: data, from: data-db-0}, {name: cache, from: /deployment/web/cache}]\n"+
		"  target: {subPath: restored/today}\n")
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatalf("a valid partial, redirected restore was rejected: %v", err)
	}
}

func TestImmutableFieldsCannotChange(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)

	backup := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "n1", Pod: v1.PodReference{Name: "p", UID: "u1"}, Volume: "data",
			SourcePath: "/pod/p/data", StorageLocation: "default", Repository: "r", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, backup); err != nil {
		t.Fatal(err)
	}
	moved := backup.DeepCopy()
	moved.Spec.Node = "n2"
	if err := env.Client.Update(ctx, moved); err == nil || !strings.Contains(err.Error(), "node is immutable") {
		t.Errorf("moving a backup to another node: err = %v, want 'node is immutable'", err)
	}
	// The hooks the agent waits for are fixed at creation: nobody who may update a
	// backup adds pre hooks to hold it, or removes them to have it read early.
	hooked := backup.DeepCopy()
	hooked.Spec.Hooks = &v1.ResolvedHooks{Pre: []v1.ResolvedHook{{Name: "pre", Source: "annotations", Container: "app",
		Command: []string{"true"}, Timeout: metav1.Duration{Duration: time.Second}, OnError: v1.HookFail}}}
	if err := env.Client.Update(ctx, hooked); err == nil || !strings.Contains(err.Error(), "hooks are fixed at creation") {
		t.Errorf("adding hooks to a backup: err = %v, want 'hooks are fixed at creation'", err)
	}
	canceled := backup.DeepCopy()
	canceled.Spec.Cancel = true
	if err := env.Client.Update(ctx, canceled); err != nil {
		t.Errorf("setting spec.cancel must be allowed: %v", err)
	}

	repo := &v1.BackupRepository{
		ObjectMeta: metav1.ObjectMeta{Name: "default-kopia", Namespace: ns},
		Spec:       v1.BackupRepositorySpec{StorageLocation: "default", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, repo); err != nil {
		t.Fatal(err)
	}
	repo.Spec.Uploader = v1.UploaderRestic
	if err := env.Client.Update(ctx, repo); err == nil || !strings.Contains(err.Error(), "uploader is immutable") {
		t.Errorf("changing a repository's format: err = %v, want 'uploader is immutable'", err)
	}
}

// TestRestoreCannotBeRedirected: every field of a PodVolumeRestore that says whose data
// goes where is fixed at creation, so that nobody who may update a restore the manager
// created (a namespace admin, a GitOps tool) can point it at another namespace's
// snapshot (review H1).
func TestRestoreCannotBeRedirected(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)
	pvr := &v1.PodVolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns},
		Spec: v1.PodVolumeRestoreSpec{Node: "n1", Pod: v1.PodReference{Name: "p", UID: "u1"}, Volume: "data",
			VolumeRestore: "vr", SnapshotID: "s1", SourceNamespace: ns, StorageLocation: "default",
			Repository: "default-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, pvr); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field  string
		change func(*v1.PodVolumeRestoreSpec)
		want   string
	}{
		{"sourceNamespace", func(s *v1.PodVolumeRestoreSpec) { s.SourceNamespace = "victim" }, "sourceNamespace is immutable"},
		{"repository", func(s *v1.PodVolumeRestoreSpec) { s.Repository = "other-kopia" }, "repository is immutable"},
		{"storageLocation", func(s *v1.PodVolumeRestoreSpec) { s.StorageLocation = "other" }, "storageLocation is immutable"},
		{"snapshotID", func(s *v1.PodVolumeRestoreSpec) { s.SnapshotID = "s2" }, "snapshotID is immutable"},
		{"volumeRestore", func(s *v1.PodVolumeRestoreSpec) { s.VolumeRestore = "other" }, "volumeRestore is immutable"},
		{"uploader", func(s *v1.PodVolumeRestoreSpec) { s.Uploader = v1.UploaderRestic }, "uploader is immutable"},
		{"podVolumeBackup added", func(s *v1.PodVolumeRestoreSpec) { s.PodVolumeBackup = "b" }, "fixed at creation"},
		{"sourcePath added", func(s *v1.PodVolumeRestoreSpec) { s.SourcePath = "/pvc/x" }, "fixed at creation"},
		// A restore of a few paths cannot be widened to the whole volume, or moved.
		{"paths added", func(s *v1.PodVolumeRestoreSpec) { s.Paths = []v1.RestorePath{"etc"} }, "fixed at creation"},
		{"subPath added", func(s *v1.PodVolumeRestoreSpec) { s.SubPath = "x" }, "fixed at creation"},
	} {
		// From the stored object each time: a change that got through must not turn the
		// next one into a conflict.
		edited := &v1.PodVolumeRestore{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pvr), edited); err != nil {
			t.Fatal(err)
		}
		tc.change(&edited.Spec)
		if err := env.Client.Update(ctx, edited); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("changing %s: err = %v, want %q", tc.field, err, tc.want)
		}
	}
	canceled := &v1.PodVolumeRestore{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pvr), canceled); err != nil {
		t.Fatal(err)
	}
	canceled.Spec.Cancel = true
	if err := env.Client.Update(ctx, canceled); err != nil {
		t.Errorf("setting spec.cancel must be allowed: %v", err)
	}

	partial := pvr.DeepCopy()
	partial.ObjectMeta = metav1.ObjectMeta{Name: "partial", Namespace: ns}
	partial.Spec.Paths, partial.Spec.SubPath = []v1.RestorePath{"data/2026"}, "restored"
	if err := env.Client.Create(ctx, partial); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field  string
		change func(*v1.PodVolumeRestoreSpec)
		want   string
	}{
		{"paths", func(s *v1.PodVolumeRestoreSpec) { s.Paths = []v1.RestorePath{"data"} }, "paths is immutable"},
		{"paths removed", func(s *v1.PodVolumeRestoreSpec) { s.Paths = nil }, "fixed at creation"},
		{"subPath", func(s *v1.PodVolumeRestoreSpec) { s.SubPath = "elsewhere" }, "subPath is immutable"},
		{"subPath removed", func(s *v1.PodVolumeRestoreSpec) { s.SubPath = "" }, "fixed at creation"},
	} {
		edited := &v1.PodVolumeRestore{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(partial), edited); err != nil {
			t.Fatal(err)
		}
		tc.change(&edited.Spec)
		if err := env.Client.Update(ctx, edited); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("changing %s: err = %v, want %q", tc.field, err, tc.want)
		}
	}
}

func TestNodeIsASelectableField(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)

	for _, node := range []string{"node-a", "node-b", "node-a"} {
		pvb := &v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "b-", Namespace: ns},
			Spec: v1.PodVolumeBackupSpec{Node: node, Pod: v1.PodReference{Name: "p", UID: "u"}, Volume: "data",
				SourcePath: "/pod/p/data", StorageLocation: "default", Repository: "r", Uploader: v1.UploaderKopia},
		}
		if err := env.Client.Create(ctx, pvb); err != nil {
			t.Fatal(err)
		}
		pvr := &v1.PodVolumeRestore{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "r-", Namespace: ns},
			Spec: v1.PodVolumeRestoreSpec{Node: node, Pod: v1.PodReference{Name: "p", UID: "u"}, Volume: "data",
				VolumeRestore: "vr", SnapshotID: "k1", SourceNamespace: ns, StorageLocation: "default", Repository: "r",
				Uploader: v1.UploaderKopia},
		}
		if err := env.Client.Create(ctx, pvr); err != nil {
			t.Fatal(err)
		}
	}
	var backups v1.PodVolumeBackupList
	if err := env.Client.List(ctx, &backups, client.InNamespace(ns), client.MatchingFields{"spec.node": "node-a"}); err != nil {
		t.Fatalf("listing backups by spec.node: %v", err)
	}
	var restores v1.PodVolumeRestoreList
	if err := env.Client.List(ctx, &restores, client.InNamespace(ns), client.MatchingFields{"spec.node": "node-b"}); err != nil {
		t.Fatalf("listing restores by spec.node: %v", err)
	}
	if len(backups.Items) != 2 || len(restores.Items) != 1 {
		t.Fatalf("field selector spec.node: got %d backups on node-a (want 2), %d restores on node-b (want 1)",
			len(backups.Items), len(restores.Items))
	}
	for _, b := range backups.Items {
		if b.Spec.Node != "node-a" {
			t.Errorf("field selector spec.node=node-a returned a backup on %s", b.Spec.Node)
		}
	}
	out, err := env.Kubectl(ctx, "get", "pvb", "-n", ns, "--field-selector", "spec.node=node-b", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(out)); n != 1 {
		t.Errorf("kubectl get pvb --field-selector spec.node=node-b listed %d objects, want 1:\n%s", n, out)
	}
}

func TestKubectlShowsHoldfastObjects(t *testing.T) {
	env := testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)

	policy := &v1.VolumeBackupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-nightly"},
		Spec:       v1.VolumeBackupPolicySpec{StorageLocation: "default", Schedule: &v1.Schedule{Cron: "0 1 * * *"}},
	}
	if err := env.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), policy) })
	policy.Status = v1.VolumeBackupPolicyStatus{
		SelectedVolumes: 7, SkippedVolumes: 2,
		Conditions: []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Succeeded",
			Message: "7 volumes in 3 namespaces selected", LastTransitionTime: metav1.Now()}},
		LastRun: &v1.RunSummary{Name: "r1", Outcome: v1.RunOutcomePartiallyFailed, StartTime: &metav1.Time{Time: time.Now().Add(-time.Hour)}},
	}
	if err := env.Client.Status().Update(ctx, policy); err != nil {
		t.Fatal(err)
	}

	backup := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0-data", Namespace: ns},
		Spec: v1.PodVolumeBackupSpec{Node: "worker-1", Pod: v1.PodReference{Name: "db-0", UID: "u"}, Volume: "data",
			SourcePath: "/pvc/data-db-0", StorageLocation: "default", Repository: "default-kopia", Uploader: v1.UploaderKopia},
	}
	if err := env.Client.Create(ctx, backup); err != nil {
		t.Fatal(err)
	}
	backup.Status = v1.PodVolumeBackupStatus{Phase: v1.RunInProgress, Progress: v1.Progress{BytesDone: 1048576, TotalBytes: 4194304}}
	if err := env.Client.Status().Update(ctx, backup); err != nil {
		t.Fatal(err)
	}

	out, err := env.Kubectl(ctx, "get", "vbp", policy.Name)
	if err != nil {
		t.Fatal(err)
	}
	assertTable(t, out, []string{"NAME", "READY", "VOLUMES", "SKIPPED", "LAST RUN", "OUTCOME", "NEXT RUN", "AGE"},
		[]string{policy.Name, "True", "7", "2", "PartiallyFailed"})

	out, err = env.Kubectl(ctx, "get", "pvb", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	assertTable(t, out, []string{"NAME", "PHASE", "POD", "VOLUME", "NODE", "BYTES DONE", "BYTES TOTAL", "AGE"},
		[]string{"db-0-data", "InProgress", "db-0", "data", "worker-1", "1048576", "4194304"})

	out, err = env.Kubectl(ctx, "get", "holdfast", "-A")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"volumebackuppolicy.backup.holdfast.dev/" + policy.Name, "podvolumebackup.backup.holdfast.dev/db-0-data"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get holdfast -A does not list %s:\n%s", want, out)
		}
	}

	out, err = env.Kubectl(ctx, "explain", "volumebackuppolicy.spec")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"selector", "picks the volumes with CEL expressions", "storageLocation",
		"-required-", "retention", "deletionPolicy"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain volumebackuppolicy.spec lacks %q:\n%s", want, out)
		}
	}
}

// assertTable checks the header and the first data row of a kubectl table.
func assertTable(t *testing.T, out string, header, row []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		t.Fatalf("kubectl printed no rows:\n%s", out)
	}
	for _, h := range header {
		if !strings.Contains(lines[0], h) {
			t.Errorf("header %q lacks column %q", lines[0], h)
		}
	}
	fields := strings.Fields(lines[1])
	for _, want := range row {
		found := false
		for _, f := range fields {
			if f == want {
				found = true
			}
		}
		if !found {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
}
