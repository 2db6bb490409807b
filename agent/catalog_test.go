package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestRestoreFromTheStoreWhenTheBackupObjectsAreGone is the namespace deleted by
// mistake, at the level of objects: a volume is backed up, then its PodVolumeBackup
// and its BackupRepository go (as they do with their namespace; the snapshot stays in
// the store), and a VolumeRestore applied again finds the snapshot in the store,
// connects the repository again and restores the data into the new pod.
func TestRestoreFromTheStoreWhenTheBackupObjectsAreGone(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			nsObj := &corev1.Namespace{}
			if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: ns}, nsObj); err != nil {
				t.Fatal(err)
			}
			repo := ensureRepository(t, ns, "minio", uploader)
			data := map[string]string{"orders.db": "the orders\n", "logs/today": "a line\n"}
			backup := backUpAndForget(t, ns, "app", repo, uploader, string(nsObj.UID), data)

			vr, dst := startRestore(t, ns, "restored", "app")
			got := waitRestored(t, vr)
			for name, want := range data {
				if b, err := os.ReadFile(filepath.Join(dst.dir, name)); err != nil || string(b) != want {
					t.Errorf("%s restored as %q (%v), want %q", name, b, err, want)
				}
			}
			if got.Spec.SnapshotID != backup.Status.SnapshotID || got.Spec.PodVolumeBackup != backup.Name {
				t.Errorf("restored snapshot %s of %q, want %s of %s", got.Spec.SnapshotID, got.Spec.PodVolumeBackup, backup.Status.SnapshotID, backup.Name)
			}
			brepo := &v1.BackupRepository{}
			if err := env.Client.Get(ctxFor(t), types.NamespacedName{Namespace: ns, Name: repo}, brepo); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "restore points in the repository's status", func() error {
				if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(brepo), brepo); err != nil {
					return err
				}
				for _, rp := range brepo.Status.RestorePoints {
					if rp.SourcePath == backup.Spec.SourcePath && rp.NamespaceUID == string(nsObj.UID) && rp.LatestSnapshotID == backup.Status.SnapshotID {
						return nil
					}
				}
				return fmt.Errorf("restorePoints = %+v", brepo.Status.RestorePoints)
			})
		})
	}
}

// TestAnEarlierNamespaceIsRestoredOnlyWhenAdopted: snapshots taken in an earlier
// namespace of the same name (another UID: deleted and created again, perhaps for
// another team) are not restored until an administrator annotates the namespace
// (review M14); then they are.
func TestAnEarlierNamespaceIsRestoredOnlyWhenAdopted(t *testing.T) {
	testenv.Require(t, env)
	ctx := ctxFor(t)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "fs", v1.UploaderKopia)
	const earlier = "00000000-0000-4000-8000-0000000e4411"
	backup := backUpAndForget(t, ns, "app", repo, v1.UploaderKopia, earlier, map[string]string{"secret": "the earlier team's data\n"})

	vr, dst := startRestore(t, ns, "restored", "app")
	waitFor(t, "the restore to say why it waits", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(vr), vr); err != nil {
			return err
		}
		msg := conditions.ReadyMessage(vr.Status.Conditions)
		var pvrs v1.PodVolumeRestoreList
		if err := env.Client.List(ctx, &pvrs, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(pvrs.Items) > 0 {
			t.Fatalf("a restore of the earlier namespace's snapshot was planned: %+v", pvrs.Items[0].Spec)
		}
		// Once the store is read, the restore says what it holds and how to adopt it.
		if !strings.Contains(msg, "taken in an earlier namespace") || !strings.Contains(msg, v1.AnnotationAdoptBackups+": <uid>") ||
			!strings.Contains(msg, earlier) || strings.Contains(msg, "still reading the store") {
			return fmt.Errorf("phase %s: %s", vr.Status.Phase, msg)
		}
		return nil
	})
	if entries, _ := os.ReadDir(dst.dir); len(entries) != 0 {
		t.Fatalf("%d entries in the new pod's volume before the namespace adopted anything", len(entries))
	}

	nsObj := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Annotations = map[string]string{v1.AnnotationAdoptBackups: earlier}
	if err := env.Client.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	pvr := waitRestored(t, vr)
	if pvr.Spec.SnapshotID != backup.Status.SnapshotID {
		t.Errorf("restored %s, want the adopted %s", pvr.Spec.SnapshotID, backup.Status.SnapshotID)
	}
	if b, err := os.ReadFile(filepath.Join(dst.dir, "secret")); err != nil || string(b) != "the earlier team's data\n" {
		t.Errorf("restored %q (%v)", b, err)
	}
}

// backUpAndForget backs up a new volume of a bare pod in ns with files, recording the
// namespace incarnation uid, then deletes the PodVolumeBackup (its snapshot stays),
// the BackupRepository object and the pod, as the namespace's deletion would.
func backUpAndForget(t *testing.T, ns, pod, repo string, uploader v1.Uploader, uid string, files map[string]string) *v1.PodVolumeBackup {
	t.Helper()
	ctx := ctxFor(t)
	src := newVolume(t, ns, pod)
	for name, content := range files {
		path := filepath.Join(src.dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	location := "fs"
	if strings.HasPrefix(repo, "minio") {
		location = "minio"
	}
	pvb := &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: pod + "-backup", Namespace: ns, Labels: map[string]string{v1.LabelPolicy: "dr-test"}},
		Spec: v1.PodVolumeBackupSpec{Node: nodeName, Pod: v1.PodReference{Name: src.pod, UID: string(src.uid)}, Volume: src.name,
			SourcePath: "/pod/" + pod + "/data", StorageLocation: location, Repository: repo, Uploader: uploader,
			Tags: map[string]string{identity.TagNamespaceUID: uid}},
	}
	if err := env.Client.Create(ctx, pvb); err != nil {
		t.Fatal(err)
	}
	done := waitBackupPhase(t, pvb, v1.RunCompleted, v1.RunFailed)
	if done.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup %s: %s", done.Status.Phase, done.Status.Message)
	}
	brepo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repo}}
	old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod}}
	for _, o := range []client.Object{done.DeepCopy(), brepo, old} {
		// No kubelet confirms a pod's graceful deletion here.
		if err := env.Client.Delete(ctx, o, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the deletion of "+o.GetName(), func() error {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
	}
	return done
}

// startRestore applies a VolumeRestore of the pods labelled app=<label> and creates
// such a pod, waiting in restore-wait as the webhook would have made it.
func startRestore(t *testing.T, ns, label, pod string) (*v1.VolumeRestore, volume) {
	t.Helper()
	vr := &v1.VolumeRestore{ObjectMeta: metav1.ObjectMeta{Name: label, Namespace: ns},
		Spec: v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": label}}, Source: &v1.RestoreSource{Latest: true}}}
	if err := env.Client.Create(ctxFor(t), vr); err != nil {
		t.Fatal(err)
	}
	dst := newLabelledVolume(t, ns, pod, map[string]string{"app": label}, []corev1.Container{
		restorewait.Container(restorewait.ContainerName, string(vr.UID), []string{"data"}, "", 0, corev1.Container{Image: "holdfast"})})
	return vr, dst
}

// waitRestored waits for the restore to complete and returns its one PodVolumeRestore.
func waitRestored(t *testing.T, vr *v1.VolumeRestore) *v1.PodVolumeRestore {
	t.Helper()
	ctx := ctxFor(t)
	waitFor(t, "restore "+vr.Name+" Completed", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(vr), vr); err != nil {
			return err
		}
		if vr.Status.Phase != v1.RestoreCompleted {
			return fmt.Errorf("phase %s: %s", vr.Status.Phase, conditions.ReadyMessage(vr.Status.Conditions))
		}
		return nil
	})
	var pvrs v1.PodVolumeRestoreList
	if err := env.Client.List(ctx, &pvrs, client.InNamespace(vr.Namespace), client.MatchingLabels{v1.LabelRestore: vr.Name}); err != nil {
		t.Fatal(err)
	}
	if len(pvrs.Items) != 1 {
		t.Fatalf("%d PodVolumeRestores, want 1", len(pvrs.Items))
	}
	return &pvrs.Items[0]
}
