package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

func newRepository(t *testing.T, ns, bsl string, uploader v1.Uploader, interval time.Duration) *v1.BackupRepository {
	t.Helper()
	b := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: bsl + "-" + string(uploader)},
		Spec: v1.BackupRepositorySpec{StorageLocation: bsl, Uploader: uploader, MaintenanceInterval: &metav1.Duration{Duration: interval}}}
	create(t, b)
	return b
}

// waitRepository waits until check accepts the repository's current state.
func waitRepository(t *testing.T, b *v1.BackupRepository, what string, check func(*v1.BackupRepository) error) *v1.BackupRepository {
	t.Helper()
	got := &v1.BackupRepository{}
	eventually(t, 3*time.Minute, fmt.Sprintf("repository %s/%s: %s", b.Namespace, b.Name, what), func() error {
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(b), got); err != nil {
			return err
		}
		return check(got)
	})
	return got
}

func isReady(b *v1.BackupRepository) error {
	if !conditions.IsReady(b.Status.Conditions) {
		return fmt.Errorf("not ready: %+v", b.Status.Conditions)
	}
	return nil
}

// maintainedAfter accepts a repository with a successful maintenance pass that
// started after t0.
func maintainedAfter(t0 time.Time) func(*v1.BackupRepository) error {
	return func(b *v1.BackupRepository) error {
		for _, m := range b.Status.Maintenance {
			if m.Result == "Succeeded" && !m.StartTime.Time.Before(t0.Truncate(time.Second)) {
				return nil
			}
		}
		return fmt.Errorf("no successful maintenance since %s: %+v", t0, b.Status.Maintenance)
	}
}

// requestMaintenance asks for a maintenance pass now, as an operator can.
func requestMaintenance(t *testing.T, b *v1.BackupRepository) {
	t.Helper()
	got := &v1.BackupRepository{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(b), got); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(got.DeepCopy())
	if got.Annotations == nil {
		got.Annotations = map[string]string{}
	}
	got.Annotations[AnnotationMaintenanceRequested] = time.Now().UTC().Format(time.RFC3339Nano)
	if err := env.Client.Patch(ctxFor(t), got, patch); err != nil {
		t.Fatal(err)
	}
}

func keyOf(t *testing.T, b *v1.BackupRepository) string {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: operatorNamespace, Name: b.Status.KeySecretName}, s); err != nil {
		t.Fatalf("key Secret of %s/%s: %v", b.Namespace, b.Name, err)
	}
	p, err := repository.PasswordFromSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// openAsClient opens a Ready repository the way the agent will: the store from the
// location, the key from the Secret named in status.
func openAsClient(t *testing.T, bsl *v1.BackupStorageLocation, b *v1.BackupRepository, password string) (repository.Repository, error) {
	t.Helper()
	store, _, err := storeFor(ctxFor(t), env.Client, operatorNamespace, bsl)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repository.Open(ctxFor(t), repository.Config{Store: store, Uploader: b.Spec.Uploader, Namespace: b.Namespace,
		Password: password, WorkDir: t.TempDir(), ResticPath: filepath.Join(testenv.ToolsBin(), "restic"), Owner: "agent@test"})
	if err == nil {
		t.Cleanup(func() { _ = r.Close(ctxFor(t)) })
	}
	return r, err
}

func sourceDir(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRepositoriesOwnKeysAndMaintenance: two namespaces get repositories with keys of
// their own (data written with one key cannot be read with the other); a kopia and a
// restic repository are initialised, written to through internal/repository and then
// maintained by the manager, with the results in status.
func TestRepositoriesOwnKeysAndMaintenance(t *testing.T) {
	testenv.Require(t, env)
	bsl := location(t, uniqueName(t, "bsl"), plainS3, nil)
	waitLocation(t, bsl.Name, metav1.ConditionTrue)
	nsA, nsB := env.Namespace(t, nil), env.Namespace(t, nil)
	kopiaA := newRepository(t, nsA, bsl.Name, v1.UploaderKopia, time.Hour)
	resticA := newRepository(t, nsA, bsl.Name, v1.UploaderRestic, time.Hour)
	kopiaB := newRepository(t, nsB, bsl.Name, v1.UploaderKopia, time.Hour)

	kopiaA = waitRepository(t, kopiaA, "Ready", isReady)
	resticA = waitRepository(t, resticA, "Ready", isReady)
	kopiaB = waitRepository(t, kopiaB, "Ready", isReady)
	if want := "s3://backups/" + bsl.Name + "/kopia/" + nsA + "/"; kopiaA.Status.URL != want {
		t.Errorf("url = %s, want %s", kopiaA.Status.URL, want)
	}
	if want := "s3://backups/" + bsl.Name + "/restic/" + nsA + "/"; resticA.Status.URL != want {
		t.Errorf("url = %s, want %s", resticA.Status.URL, want)
	}
	keyA, keyB, keyResticA := keyOf(t, kopiaA), keyOf(t, kopiaB), keyOf(t, resticA)
	if keyA == keyB || keyA == keyResticA || kopiaA.Status.KeySecretName == kopiaB.Status.KeySecretName {
		t.Fatalf("repositories share a key or a key Secret: %s %s", kopiaA.Status.KeySecretName, kopiaB.Status.KeySecretName)
	}

	files := map[string]string{"orders.db": "42 orders", "notes.txt": "hello"}
	for _, b := range []*v1.BackupRepository{kopiaA, resticA} {
		rep, err := openAsClient(t, bsl, b, keyOf(t, b))
		if err != nil {
			t.Fatalf("opening %s with its key: %v", b.Name, err)
		}
		res, err := rep.Backup(ctxFor(t), repository.BackupRequest{Dir: sourceDir(t, files), SourcePath: "/pvc/orders"})
		if err != nil {
			t.Fatalf("backing up into %s: %v", b.Name, err)
		}
		target := t.TempDir()
		if _, err := rep.Restore(ctxFor(t), repository.RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target}); err != nil {
			t.Fatalf("restoring from %s: %v", b.Name, err)
		}
		for name, want := range files {
			if got, err := os.ReadFile(filepath.Join(target, name)); err != nil || !bytes.Equal(got, []byte(want)) {
				t.Errorf("%s: restored %s = %q, %v", b.Name, name, got, err)
			}
		}
		wrote := time.Now()
		requestMaintenance(t, b)
		got := waitRepository(t, b, "maintained after the backup", maintainedAfter(wrote))
		m := got.Status.Maintenance[0]
		t.Logf("%s maintenance: %s %s %q", b.Spec.Uploader, m.Mode, m.Result, m.Message)
		if got.Status.LastMaintenanceTime == nil || len(got.Status.Maintenance) > 5 {
			t.Errorf("maintenance status = %+v", got.Status)
		}
		if b.Spec.Uploader == v1.UploaderRestic && m.Mode != "Prune" {
			t.Errorf("restic maintenance mode = %s, want Prune", m.Mode)
		}
		// The size the pass measured is what MinIO itself lists under the repository
		// (kopia may add a log blob of a few KiB when the repository is closed).
		listed, err := plainS3.Size(ctxFor(t), "backups", bsl.Name+"/"+string(b.Spec.Uploader)+"/"+b.Namespace+"/")
		if err != nil {
			t.Fatal(err)
		}
		u := got.Status.StoreUsage
		if u == nil || u.MeasuredTime.Time.Before(wrote.Truncate(time.Second)) || u.Bytes <= 0 || u.Objects <= 0 || u.Bytes > listed || listed-u.Bytes > 64<<10 {
			t.Errorf("status.storeUsage = %+v after the pass; MinIO lists %d bytes", u, listed)
		} else if !strings.Contains(m.Message, fmt.Sprintf("in %d objects", u.Objects)) {
			t.Errorf("maintenance message %q does not give the size", m.Message)
		}
	}
	// kopia runs full maintenance first (recorded in an annotation, since the history
	// keeps only five passes), and quick passes until a day has gone by.
	requestMaintenance(t, kopiaA)
	waitRepository(t, kopiaA, "a quick pass after the full one", func(b *v1.BackupRepository) error {
		full, err := time.Parse(time.RFC3339, b.Annotations[AnnotationLastFullMaintenance])
		if err != nil {
			return fmt.Errorf("no full pass recorded: %v", err)
		}
		for _, m := range b.Status.Maintenance {
			if m.Mode == "Quick" && m.Result == "Succeeded" && !m.StartTime.Time.Before(full) {
				return nil
			}
		}
		return fmt.Errorf("no quick pass after the full one at %s: %+v", full, b.Status.Maintenance)
	})

	// Data written with namespace A's key is unreadable with namespace B's.
	if _, err := openAsClient(t, bsl, kopiaA, keyB); !errors.Is(err, repository.ErrWrongKey) {
		t.Fatalf("opening %s's repository with %s's key: %v, want ErrWrongKey", nsA, nsB, err)
	}
	if _, err := openAsClient(t, bsl, resticA, keyB); !errors.Is(err, repository.ErrWrongKey) {
		t.Fatalf("opening %s's restic repository with %s's key: %v, want ErrWrongKey", nsA, nsB, err)
	}
}

// TestReplacedKeySecretStalls: when a repository's key Secret is replaced by one with
// another key, the repository goes Stalled with a sentence saying so, and nothing at
// all is written to the store.
func TestReplacedKeySecretStalls(t *testing.T) {
	testenv.Require(t, env)
	bsl := location(t, uniqueName(t, "bsl"), plainS3, nil)
	waitLocation(t, bsl.Name, metav1.ConditionTrue)
	ns := env.Namespace(t, nil)
	b := newRepository(t, ns, bsl.Name, v1.UploaderKopia, time.Hour)
	b = waitRepository(t, b, "Ready and maintained once", func(b *v1.BackupRepository) error {
		if err := isReady(b); err != nil {
			return err
		}
		if len(b.Status.Maintenance) == 0 {
			return errors.New("not maintained yet")
		}
		return nil
	})
	before, err := plainS3.Objects(ctxFor(t), "backups", bsl.Name+"/")
	if err != nil || len(before) == 0 {
		t.Fatalf("objects before: %v %v", before, err)
	}

	// Someone replaces the Secret (it is immutable, so: delete and create).
	old := &corev1.Secret{}
	if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: operatorNamespace, Name: b.Status.KeySecretName}, old); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctxFor(t), old); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := repository.GenerateKey()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: old.Name, Namespace: operatorNamespace, Labels: old.Labels},
		Data: map[string][]byte{repository.KeySecretKey: []byte(otherKey)}})

	got := waitRepository(t, b, "Stalled", func(b *v1.BackupRepository) error {
		if !conditions.IsStalled(b.Status.Conditions) {
			return fmt.Errorf("not stalled: %+v", b.Status.Conditions)
		}
		return nil
	})
	ready := readyCondition(got.Status.Conditions)
	if ready.Reason != "WrongKey" || ready.Status != metav1.ConditionFalse {
		t.Errorf("Ready = %+v", ready)
	}
	t.Logf("Stalled: %s", ready.Message)
	after, err := plainS3.Objects(ctxFor(t), "backups", bsl.Name+"/")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("the store changed while the key was wrong:\nbefore %v\nafter  %v", before, after)
	}
}
