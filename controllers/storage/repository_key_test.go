package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	miniogo "github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/keyescrow"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// namedNamespace creates a namespace with exactly this name (deleted at the end).
func namedNamespace(t *testing.T, name string) string {
	t.Helper()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	return name
}

// fsLocation creates a filesystem storage location in a directory of its own. The
// directory goes at the end, once the manager has stopped writing into it (a
// maintenance pass may still be running when the test's objects are deleted).
func fsLocation(t *testing.T, name string, recipients ...string) *v1.BackupStorageLocation {
	t.Helper()
	dir, err := os.MkdirTemp("", "holdfast-fs-location-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testenv.Poll(context.Background(), time.Minute, func() error { return os.RemoveAll(dir) }); err != nil {
			t.Errorf("removing the location's directory: %v", err)
		}
	})
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.BackupStorageLocationSpec{
		Filesystem: &v1.FilesystemLocation{Path: dir}, RecoveryRecipients: recipients}}
	create(t, bsl)
	return bsl
}

// s3Location creates a location on the plain MinIO, with prefix name and the given
// recipients.
func s3Location(t *testing.T, name string, recipients ...string) *v1.BackupStorageLocation {
	t.Helper()
	credentials(t, name+"-creds", plainS3.AccessKey, plainS3.SecretKey)
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.BackupStorageLocationSpec{
		S3: &v1.S3Location{Bucket: "backups", Prefix: name, Endpoint: plainS3.Endpoint, ForcePathStyle: true, Insecure: true,
			CredentialsSecretRef: v1.SecretReference{Name: name + "-creds"}},
		RecoveryRecipients: recipients}}
	create(t, bsl)
	return bsl
}

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func storeOf(t *testing.T, bsl *v1.BackupStorageLocation) repository.Store {
	t.Helper()
	st, _, err := storeFor(ctxFor(t), env.Client, operatorNamespace, bsl)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openEscrow reads and decrypts a repository's escrow with id.
func openEscrow(t *testing.T, st repository.Store, b *v1.BackupRepository, id age.Identity) (keyescrow.Escrow, error) {
	t.Helper()
	data, err := keyescrow.Read(ctxFor(t), st, b.Spec.Uploader, b.Namespace)
	if err != nil {
		return keyescrow.Escrow{}, err
	}
	return keyescrow.Open(data, []age.Identity{id})
}

func condition(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func stalledWith(reason string) func(*v1.BackupRepository) error {
	return func(b *v1.BackupRepository) error {
		if c := condition(b.Status.Conditions, v1.ConditionStalled); c.Status != metav1.ConditionTrue || c.Reason != reason {
			return fmt.Errorf("not Stalled with %s: %+v", reason, b.Status.Conditions)
		}
		return nil
	}
}

func keySecrets(t *testing.T, b *v1.BackupRepository) []corev1.Secret {
	t.Helper()
	var list corev1.SecretList
	if err := env.Client.List(ctxFor(t), &list, client.InNamespace(operatorNamespace), client.MatchingLabels{
		LabelRepositoryNamespace: b.Namespace, LabelRepositoryName: b.Name}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// storeObjects lists the objects under prefix on a MinIO with their ETags, leaving
// out the location's probe objects (the probe runs on its own schedule).
func storeObjects(t *testing.T, s *minio.Server, prefix string) map[string]string {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for obj := range c.ListObjects(ctxFor(t), "backups", miniogo.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if !strings.Contains(obj.Key, "/.holdfast-probe/") {
			out[obj.Key] = obj.ETag
		}
	}
	return out
}

// TestCollidingNamesGetTheirOwnKeys: namespace team-a with repository main-kopia and
// namespace team with repository a-main-kopia once shared the Secret
// repository-key-team-a-main-kopia, and so one key. Both are real repositories here,
// each with a Secret and a key of its own.
func TestCollidingNamesGetTheirOwnKeys(t *testing.T) {
	testenv.Require(t, env)
	nsA, nsB := namedNamespace(t, "team-a"), namedNamespace(t, "team")
	waitLocation(t, s3Location(t, "main").Name, metav1.ConditionTrue)
	waitLocation(t, s3Location(t, "a-main").Name, metav1.ConditionTrue)
	a := waitRepository(t, newRepository(t, nsA, "main", v1.UploaderKopia, time.Hour), "Ready", isReady)
	b := waitRepository(t, newRepository(t, nsB, "a-main", v1.UploaderKopia, time.Hour), "Ready", isReady)
	if a.Name != "main-kopia" || b.Name != "a-main-kopia" {
		t.Fatalf("names %s/%s and %s/%s are not the colliding pair", a.Namespace, a.Name, b.Namespace, b.Name)
	}
	if a.Status.KeySecretName == b.Status.KeySecretName {
		t.Fatalf("both repositories use Secret %s", a.Status.KeySecretName)
	}
	if keyOf(t, a) == keyOf(t, b) {
		t.Fatal("both repositories have the same key")
	}
	for _, r := range []*v1.BackupRepository{a, b} {
		if s := keySecrets(t, r); len(s) != 1 || s[0].Name != r.Status.KeySecretName {
			t.Errorf("key Secrets labelled for %s/%s: %d (status names %s)", r.Namespace, r.Name, len(s), r.Status.KeySecretName)
		}
		t.Logf("%s/%s: Secret %s", r.Namespace, r.Name, r.Status.KeySecretName)
	}
}

// TestSecretOfAnotherRepositoryIsNotAdopted: a Secret at the name the repository's key
// would get, labelled for another repository, is not used: the repository is Stalled
// with a sentence naming it, and nothing is written to the store.
func TestSecretOfAnotherRepositoryIsNotAdopted(t *testing.T) {
	testenv.Require(t, env)
	bsl := s3Location(t, uniqueName(t, "bsl"))
	waitLocation(t, bsl.Name, metav1.ConditionTrue)
	ns := env.Namespace(t, nil)
	name := bsl.Name + "-kopia"
	key, _ := repository.GenerateKey()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: repository.KeySecretName(ns, name), Namespace: operatorNamespace,
		Labels: map[string]string{LabelRepositoryNamespace: "someone-else", LabelRepositoryName: name, v1.LabelStorageLocation: bsl.Name}},
		Data: map[string][]byte{repository.KeySecretKey: []byte(key)}})
	b := newRepository(t, ns, bsl.Name, v1.UploaderKopia, time.Hour)
	got := waitRepository(t, b, "Stalled with KeySecretConflict", stalledWith(ReasonKeySecretConflict))
	msg := condition(got.Status.Conditions, v1.ConditionReady).Message
	t.Logf("Stalled: %s", msg)
	if !strings.Contains(msg, "someone-else/"+name) || got.Status.KeySecretName != "" {
		t.Errorf("message %q, keySecretName %q", msg, got.Status.KeySecretName)
	}
	if objs := storeObjects(t, plainS3, bsl.Name+"/"); len(objs) != 0 {
		t.Errorf("a repository with a foreign key Secret wrote to the store: %v", objs)
	}
}

// TestKeyUnderAnOldNameIsStillUsed: a repository whose key Secret has the name of the
// earlier scheme (repository-key-<namespace>-<name>) keeps it, also when its
// BackupRepository is deleted and created again (then only the labels find it); no
// second key is made.
func TestKeyUnderAnOldNameIsStillUsed(t *testing.T) {
	testenv.Require(t, env)
	bsl := s3Location(t, uniqueName(t, "bsl"))
	waitLocation(t, bsl.Name, metav1.ConditionTrue)
	ns := env.Namespace(t, nil)
	name := bsl.Name + "-restic"
	oldName := "repository-key-" + ns + "-" + name
	key, _ := repository.GenerateKey()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: oldName, Namespace: operatorNamespace, Labels: map[string]string{
		v1.LabelManagedBy: v1.ManagedByValue, LabelRepositoryNamespace: ns, LabelRepositoryName: name, v1.LabelStorageLocation: bsl.Name}},
		Data: map[string][]byte{repository.KeySecretKey: []byte(key)}})
	// The repository exists in the store, written with that key by an older manager.
	cfg := repository.Config{Store: storeOf(t, bsl), Uploader: v1.UploaderRestic, Namespace: ns, Password: key,
		WorkDir: t.TempDir(), ResticPath: filepath.Join(testenv.ToolsBin(), "restic")}
	if err := repository.Initialize(ctxFor(t), cfg); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		b := newRepository(t, ns, bsl.Name, v1.UploaderRestic, time.Hour)
		got := waitRepository(t, b, "Ready", isReady)
		if got.Status.KeySecretName != oldName || keyOf(t, got) != key {
			t.Fatalf("round %d: keySecretName = %s, want %s", round, got.Status.KeySecretName, oldName)
		}
		if s := keySecrets(t, got); len(s) != 1 {
			t.Fatalf("round %d: %d key Secrets for one repository", round, len(s))
		}
		if err := env.Client.Delete(ctxFor(t), b); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "the repository to go", func() error {
			err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(b), &v1.BackupRepository{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
	}
}

// TestKeyEscrowedBeforeInit: with recovery recipients, each repository's key is in the
// store beside the repository, encrypted to them, before the repository exists. On
// MinIO the escrow object is older than every object of the repository; on a
// filesystem, a repository whose initialisation fails (its directory is a dangling
// symlink) has its escrow already, and nothing else.
func TestKeyEscrowedBeforeInit(t *testing.T) {
	testenv.Require(t, env)
	id := newIdentity(t)
	t.Run("minio", func(t *testing.T) {
		t.Parallel()
		bsl := s3Location(t, uniqueName(t, "bsl"), id.Recipient().String())
		waitLocation(t, bsl.Name, metav1.ConditionTrue)
		ns := env.Namespace(t, nil)
		c, err := plainS3.Client()
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
			b := waitRepository(t, newRepository(t, ns, bsl.Name, u, time.Hour), "Ready", isReady)
			esc, err := openEscrow(t, storeOf(t, bsl), b, id)
			if err != nil || esc.Password != keyOf(t, b) || esc.Namespace != ns || esc.Uploader != u || esc.Repository != b.Name ||
				esc.StorageLocation != bsl.Name || esc.KeySecretName != b.Status.KeySecretName || esc.KeyCreated.IsZero() {
				t.Fatalf("%s escrow %+v, %v", u, esc, err)
			}
			escrowKey := bsl.Name + "/" + string(u) + "/" + ns + ".key.age"
			var escrowTime, firstRepoObject time.Time
			for obj := range c.ListObjects(ctxFor(t), "backups", miniogo.ListObjectsOptions{Prefix: bsl.Name + "/" + string(u) + "/" + ns, Recursive: true}) {
				switch {
				case obj.Err != nil:
					t.Fatal(obj.Err)
				case obj.Key == escrowKey:
					escrowTime = obj.LastModified
				case firstRepoObject.IsZero() || obj.LastModified.Before(firstRepoObject):
					firstRepoObject = obj.LastModified
				}
			}
			t.Logf("%s: escrow written %s, first repository object %s", u, escrowTime.Format(time.StampMicro), firstRepoObject.Format(time.StampMicro))
			if escrowTime.IsZero() || firstRepoObject.IsZero() || escrowTime.After(firstRepoObject) {
				t.Errorf("%s: the escrow (%s) is not older than the repository (%s)", u, escrowTime, firstRepoObject)
			}
			if e := b.Status.KeyEscrow; e == nil || e.URL != "s3://backups/"+escrowKey || e.Recipients != 1 ||
				condition(b.Status.Conditions, v1.ConditionKeyEscrowed).Status != metav1.ConditionTrue {
				t.Errorf("%s: status %+v, conditions %+v", u, b.Status.KeyEscrow, b.Status.Conditions)
			}
		}
		waitLocationCondition(t, bsl.Name, v1.ConditionKeysEscrowed, metav1.ConditionTrue)
	})
	t.Run("filesystem", func(t *testing.T) {
		t.Parallel()
		bsl := fsLocation(t, uniqueName(t, "bsl"), id.Recipient().String())
		waitLocation(t, bsl.Name, metav1.ConditionTrue)
		ns := env.Namespace(t, nil)
		root := bsl.Spec.Filesystem.Path
		nowhere := filepath.Join(root, "nowhere")
		for _, u := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
			repoDir := filepath.Join(root, string(u), ns)
			if err := os.MkdirAll(filepath.Dir(repoDir), 0o770); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(nowhere, repoDir); err != nil {
				t.Fatal(err)
			}
			b := newRepository(t, ns, bsl.Name, u, time.Hour)
			eventually(t, 2*time.Minute, string(u)+" escrow", func() error {
				_, err := os.Stat(filepath.Join(root, string(u), ns+".key.age"))
				return err
			})
			b = waitRepository(t, b, "a key", func(b *v1.BackupRepository) error {
				if b.Status.KeySecretName == "" {
					return errors.New("no key Secret yet")
				}
				return nil
			})
			if esc, err := openEscrow(t, storeOf(t, bsl), b, id); err != nil || esc.Password != keyOf(t, b) {
				t.Fatalf("%s: escrow %+v, %v", u, esc, err)
			}
			if _, err := os.Lstat(nowhere); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: the repository was initialised anyway: %v", u, err)
			}
			got := &v1.BackupRepository{}
			if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(b), got); err != nil || conditions.IsReady(got.Status.Conditions) {
				t.Fatalf("%s: Ready without a repository: %+v %v", u, got.Status.Conditions, err)
			}
			// Once the directory can be made, the repository is initialised.
			if err := os.Remove(repoDir); err != nil {
				t.Fatal(err)
			}
			patch := client.MergeFrom(got.DeepCopy())
			got.Spec.MaintenanceInterval = &metav1.Duration{Duration: 2 * time.Hour}
			if err := env.Client.Patch(ctxFor(t), got, patch); err != nil {
				t.Fatal(err)
			}
			b = waitRepository(t, b, "Ready", isReady)
			repoFile := filepath.Join(repoDir, "kopia.repository.f")
			if u == v1.UploaderRestic {
				repoFile = filepath.Join(repoDir, "config")
			}
			escrowInfo, err1 := os.Stat(filepath.Join(root, string(u), ns+".key.age"))
			repoInfo, err2 := os.Stat(repoFile)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if escrowInfo.ModTime().After(repoInfo.ModTime()) {
				t.Errorf("%s: escrow written at %s, after the repository at %s", u, escrowInfo.ModTime(), repoInfo.ModTime())
			}
			if esc, err := openEscrow(t, storeOf(t, bsl), b, id); err != nil || esc.Password != keyOf(t, b) {
				t.Fatalf("%s: escrow after init %+v, %v", u, esc, err)
			}
		}
	})
}

// waitLocationCondition waits until the location's condition typ has status want.
func waitLocationCondition(t *testing.T, name, typ string, want metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var c metav1.Condition
	eventually(t, 2*time.Minute, fmt.Sprintf("storage location %s %s=%s", name, typ, want), func() error {
		bsl := &v1.BackupStorageLocation{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKey{Name: name}, bsl); err != nil {
			return err
		}
		if c = condition(bsl.Status.Conditions, typ); c.Status != want {
			return fmt.Errorf("%s = %+v", typ, c)
		}
		return nil
	})
	return c
}

// TestRecipientAddedLater: a location without recipients works as before and says
// plainly that losing the cluster loses the data; adding a recipient escrows the
// existing repository, adding a second escrows it again to both.
func TestRecipientAddedLater(t *testing.T) {
	testenv.Require(t, env)
	bsl := s3Location(t, uniqueName(t, "bsl"))
	ready := readyCondition(waitLocation(t, bsl.Name, metav1.ConditionTrue).Status.Conditions)
	if !strings.Contains(ready.Message, "losing the cluster loses the data") {
		t.Errorf("Ready message of a location without recipients: %q", ready.Message)
	}
	c := waitLocationCondition(t, bsl.Name, v1.ConditionKeysEscrowed, metav1.ConditionFalse)
	t.Logf("KeysEscrowed: %s: %s", c.Reason, c.Message)
	ns := env.Namespace(t, nil)
	b := waitRepository(t, newRepository(t, ns, bsl.Name, v1.UploaderKopia, time.Hour), "Ready", isReady)
	if c := condition(b.Status.Conditions, v1.ConditionKeyEscrowed); c.Status != metav1.ConditionFalse || c.Reason != ReasonNoRecoveryRecipients || b.Status.KeyEscrow != nil {
		t.Errorf("KeyEscrowed = %+v, keyEscrow %+v", c, b.Status.KeyEscrow)
	}
	st := storeOf(t, bsl)
	if ok, err := keyescrow.Exists(ctxFor(t), st, v1.UploaderKopia, ns); ok || err != nil {
		t.Fatalf("an escrow without recipients: %v %v", ok, err)
	}

	alice, bob := newIdentity(t), newIdentity(t)
	for _, recipients := range [][]string{{alice.Recipient().String()}, {alice.Recipient().String(), bob.Recipient().String()}} {
		cur := &v1.BackupStorageLocation{}
		if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(bsl), cur); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.RecoveryRecipients = recipients
		if err := env.Client.Patch(ctxFor(t), cur, patch); err != nil {
			t.Fatal(err)
		}
		b = waitRepository(t, b, fmt.Sprintf("escrowed to %d recipients", len(recipients)), func(b *v1.BackupRepository) error {
			if e := b.Status.KeyEscrow; e == nil || e.Recipients != int32(len(recipients)) || e.RecipientsDigest != keyescrow.RecipientsDigest(recipients) {
				return fmt.Errorf("keyEscrow = %+v", b.Status.KeyEscrow)
			}
			return nil
		})
		for _, id := range []*age.X25519Identity{alice, bob}[:len(recipients)] {
			if esc, err := openEscrow(t, st, b, id); err != nil || esc.Password != keyOf(t, b) {
				t.Fatalf("escrow to %d recipients, opened by recipient %s: %+v %v", len(recipients), id.Recipient(), esc, err)
			}
		}
		c := waitLocationCondition(t, bsl.Name, v1.ConditionKeysEscrowed, metav1.ConditionTrue)
		t.Logf("KeysEscrowed: %s", c.Message)
	}
}

// TestKeyRecoveredFromEscrow: the key Secret of a repository with data is deleted (as
// in a cluster rebuilt without its Secrets). The repository is Stalled, saying which
// Secret to create with the identity; a wrong identity is refused without writing
// anything to the store; the right one recovers the key into a Secret with the right
// labels, the data reads back, and the identity Secret can go again.
func TestKeyRecoveredFromEscrow(t *testing.T) {
	testenv.Require(t, env)
	for _, tc := range []struct {
		name     string
		uploader v1.Uploader
		s3       bool
		// recreate deletes the BackupRepository too, as a new cluster would not have it.
		recreate bool
	}{
		{name: "kopia on minio", uploader: v1.UploaderKopia, s3: true},
		{name: "restic on a filesystem, repository created again", uploader: v1.UploaderRestic, recreate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, wrong := newIdentity(t), newIdentity(t)
			var bsl *v1.BackupStorageLocation
			if tc.s3 {
				bsl = s3Location(t, uniqueName(t, "bsl"), id.Recipient().String())
			} else {
				bsl = fsLocation(t, uniqueName(t, "bsl"), id.Recipient().String())
			}
			waitLocation(t, bsl.Name, metav1.ConditionTrue)
			ns := env.Namespace(t, nil)
			b := waitRepository(t, newRepository(t, ns, bsl.Name, tc.uploader, time.Hour), "Ready and maintained once", func(b *v1.BackupRepository) error {
				if err := isReady(b); err != nil {
					return err
				}
				if len(b.Status.Maintenance) == 0 {
					return errors.New("not maintained yet")
				}
				return nil
			})
			key := keyOf(t, b)
			rep, err := openAsClient(t, bsl, b, key)
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"orders.db": "42 orders"}
			snap, err := rep.Backup(ctxFor(t), repository.BackupRequest{Dir: sourceDir(t, files), SourcePath: "/pvc/orders"})
			if err != nil {
				t.Fatal(err)
			}
			_ = rep.Close(ctxFor(t))

			old := &corev1.Secret{}
			if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: operatorNamespace, Name: b.Status.KeySecretName}, old); err != nil {
				t.Fatal(err)
			}
			if tc.recreate {
				if err := env.Client.Delete(ctxFor(t), b); err != nil {
					t.Fatal(err)
				}
				eventually(t, time.Minute, "the repository to go", func() error {
					if err := env.Client.Get(ctxFor(t), client.ObjectKeyFromObject(b), &v1.BackupRepository{}); !apierrors.IsNotFound(err) {
						return fmt.Errorf("still there: %v", err)
					}
					return nil
				})
			}
			if err := env.Client.Delete(ctxFor(t), old); err != nil {
				t.Fatal(err)
			}
			if tc.recreate {
				b = newRepository(t, ns, bsl.Name, tc.uploader, time.Hour)
			}
			got := waitRepository(t, b, "Stalled with KeyRecoveryRequired", stalledWith(ReasonKeyRecoveryRequired))
			msg := condition(got.Status.Conditions, v1.ConditionReady).Message
			t.Logf("KeyRecoveryRequired: %s", msg)
			if want := "kubectl -n holdfast-system create secret generic holdfast-recovery-identity --from-file=identity=<identity file>"; !strings.Contains(msg, want) {
				t.Errorf("the message does not say %q", want)
			}
			before := snapshotStore(t, bsl)

			identitySecret := func(id *age.X25519Identity) {
				_ = env.Client.Delete(ctxFor(t), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: keyescrow.IdentitySecretName, Namespace: operatorNamespace}})
				create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: keyescrow.IdentitySecretName, Namespace: operatorNamespace},
					Data: map[string][]byte{keyescrow.IdentityKey: []byte("# created by the test\n" + id.String() + "\n")}})
			}
			identitySecret(wrong)
			got = waitRepository(t, b, "Stalled with KeyRecoveryFailed", stalledWith(ReasonKeyRecoveryFailed))
			t.Logf("KeyRecoveryFailed: %s", condition(got.Status.Conditions, v1.ConditionReady).Message)
			if after := snapshotStore(t, bsl); !reflect.DeepEqual(before, after) {
				t.Fatalf("the store changed with a wrong identity:\nbefore %v\nafter  %v", before, after)
			}
			if s := keySecrets(t, b); len(s) != 0 {
				t.Fatalf("a key Secret was made with a wrong identity: %s", s[0].Name)
			}

			identitySecret(id)
			got = waitRepository(t, b, "Ready", isReady)
			secrets := keySecrets(t, got)
			if len(secrets) != 1 || secrets[0].Name != got.Status.KeySecretName || !belongsTo(&secrets[0], got) ||
				secrets[0].Labels[v1.LabelManagedBy] != v1.ManagedByValue || string(secrets[0].Data[repository.KeySecretKey]) != key {
				t.Fatalf("recovered key Secrets: %+v", secrets)
			}
			rep, err = openAsClient(t, bsl, got, keyOf(t, got))
			if err != nil {
				t.Fatal(err)
			}
			target := t.TempDir()
			if _, err := rep.Restore(ctxFor(t), repository.RestoreRequest{SnapshotID: snap.SnapshotID, TargetDir: target}); err != nil {
				t.Fatal(err)
			}
			if data, err := os.ReadFile(filepath.Join(target, "orders.db")); err != nil || string(data) != files["orders.db"] {
				t.Fatalf("restored %q %v", data, err)
			}
			ev := waitEvent(t, got, ReasonKeyRecovered)
			t.Logf("event: %s", ev)
			if !strings.Contains(ev, "delete the identity Secret") {
				t.Errorf("the event does not say the identity Secret may go: %s", ev)
			}
			// Without the identity the repository stays Ready.
			if err := env.Client.Delete(ctxFor(t), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: keyescrow.IdentitySecretName, Namespace: operatorNamespace}}); err != nil {
				t.Fatal(err)
			}
			patch := client.MergeFrom(got.DeepCopy())
			got.Spec.MaintenanceInterval = &metav1.Duration{Duration: 2 * time.Hour}
			if err := env.Client.Patch(ctxFor(t), got, patch); err != nil {
				t.Fatal(err)
			}
			waitRepository(t, b, "Ready at the new generation", func(b *v1.BackupRepository) error {
				if b.Status.ObservedGeneration != b.Generation {
					return errors.New("not observed yet")
				}
				return isReady(b)
			})
		})
	}
}

// snapshotStore is the list of objects (and their ETags or sizes and times) of a
// location, without probe objects.
func snapshotStore(t *testing.T, bsl *v1.BackupStorageLocation) map[string]string {
	t.Helper()
	if bsl.Spec.S3 != nil {
		return storeObjects(t, plainS3, bsl.Spec.S3.Prefix+"/")
	}
	out := map[string]string{}
	root := bsl.Spec.Filesystem.Path
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || strings.Contains(p, ".holdfast-probe") {
			return err
		}
		out[strings.TrimPrefix(p, root)] = fmt.Sprintf("%d %s", info.Size(), info.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitEvent waits for an event with reason about obj and returns its message.
func waitEvent(t *testing.T, obj client.Object, reason string) string {
	t.Helper()
	var msg string
	eventually(t, time.Minute, "event "+reason, func() error {
		var events corev1.EventList
		if err := env.Client.List(context.Background(), &events, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.UID == obj.GetUID() && e.Reason == reason {
				msg = e.Message
				return nil
			}
		}
		return errors.New("no such event yet")
	})
	return msg
}
