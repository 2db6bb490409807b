package storage

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/test/minio"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// TestStorageLocationProbe tells the story of a platform engineer configuring storage:
// good stores (plain HTTP and TLS with their CA) go Ready after a real probe that
// leaves nothing behind, and each mistake — endpoint, bucket, credentials, CA — gives
// Ready=False with its own sentence in `kubectl get bsl -o wide`.
func TestStorageLocationProbe(t *testing.T) {
	testenv.Require(t, env)
	otherCA, err := minio.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		server  *minio.Server
		adjust  func(*v1.S3Location)
		creds   [2]string
		reason  string
		message string
	}{
		{name: "plain", server: plainS3, reason: ReasonProbeSucceeded, message: "Wrote, read back and deleted a probe object at s3://backups/"},
		{name: "tls", server: secureS3, reason: ReasonProbeSucceeded, message: "Wrote, read back and deleted a probe object at s3://backups/"},
		{name: "endpoint", server: plainS3, adjust: func(l *v1.S3Location) { l.Endpoint = closedPort(t) },
			reason: "StoreUnreachable", message: "cannot be reached: check spec.s3.endpoint"},
		{name: "bucket", server: plainS3, adjust: func(l *v1.S3Location) { l.Bucket = "no-such-bucket" },
			reason: "BucketMissing", message: `Bucket "no-such-bucket" does not exist on`},
		{name: "credentials", server: plainS3, creds: [2]string{minio.AccessKey, "wrong-secret-key"},
			reason: "WrongCredentials", message: "rejected the credentials for bucket \"backups\": check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{name: "ca", server: secureS3, adjust: func(l *v1.S3Location) { l.CABundle = otherCA.CertPEM },
			reason: "UntrustedCertificate", message: "is not signed by a trusted authority: set spec.s3.caBundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := uniqueName(t, "bsl")
			bsl := location(t, name, tc.server, tc.adjust)
			if tc.creds[0] != "" {
				// Replace the good credentials with bad ones.
				s := &corev1.Secret{}
				if err := env.Client.Get(ctxFor(t), client.ObjectKey{Namespace: operatorNamespace, Name: bsl.Spec.S3.CredentialsSecretRef.Name}, s); err != nil {
					t.Fatal(err)
				}
				s.Data["AWS_SECRET_ACCESS_KEY"] = []byte(tc.creds[1])
				if err := env.Client.Update(ctxFor(t), s); err != nil {
					t.Fatal(err)
				}
			}
			want := metav1.ConditionFalse
			if tc.reason == ReasonProbeSucceeded {
				want = metav1.ConditionTrue
			}
			got := waitLocation(t, name, want)
			ready := readyCondition(got.Status.Conditions)
			if ready.Reason != tc.reason || !strings.Contains(ready.Message, tc.message) {
				t.Errorf("Ready = %s %q, want reason %s and a message containing %q", ready.Reason, ready.Message, tc.reason, tc.message)
			}
			t.Logf("%s: Ready=%s %s: %s", tc.name, ready.Status, ready.Reason, ready.Message)
			// Each probe, whatever its result, is timed.
			if n, sum := probesObserved(t, name); n < 1 || sum <= 0 {
				t.Errorf("holdfast_storage_location_probe_duration_seconds{location=%q}: %d probes, %v s; want at least one", name, n, sum)
			}
			if got.Status.LastProbeTime == nil || got.Status.URL != "s3://"+got.Spec.S3.Bucket+"/"+name+"/" || got.Status.ObservedGeneration != got.Generation {
				t.Errorf("status = %+v", got.Status)
			}
			if want == metav1.ConditionTrue {
				objs, err := tc.server.Objects(ctxFor(t), "backups", name+"/")
				if err != nil || len(objs) != 0 {
					t.Errorf("the probe left objects behind: %v %v", objs, err)
				}
			} else if c := conditions.IsStalled(got.Status.Conditions); c {
				t.Errorf("a store problem must not be Stalled (it is retried): %+v", got.Status.Conditions)
			}
		})
	}
}

// TestStorageLocationCredentialsArriveLater: a location whose Secret does not exist
// yet says so in its own words, and goes Ready once the Secret is created.
func TestStorageLocationCredentialsArriveLater(t *testing.T) {
	testenv.Require(t, env)
	name := uniqueName(t, "bsl")
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.BackupStorageLocationSpec{S3: &v1.S3Location{
		Bucket: "backups", Prefix: name, Endpoint: plainS3.Endpoint, Insecure: true, ForcePathStyle: true,
		CredentialsSecretRef: v1.SecretReference{Name: name + "-creds"},
	}, ProbeInterval: &metav1.Duration{Duration: time.Hour}}}
	create(t, bsl)
	got := waitLocation(t, name, metav1.ConditionFalse)
	if r := readyCondition(got.Status.Conditions); r.Reason != ReasonCredentialsMissing || !strings.Contains(r.Message, fmt.Sprintf("The credentials Secret %s-creds does not exist in namespace %s", name, operatorNamespace)) {
		t.Fatalf("Ready = %+v", r)
	}
	credentials(t, name+"-creds", plainS3.AccessKey, plainS3.SecretKey)
	waitLocation(t, name, metav1.ConditionTrue)
}

// TestStorageLocationStoreGoesAway: a Ready location whose store stops goes
// Ready=False with the "cannot be reached" sentence (shown by kubectl get -o wide),
// and Ready again on its own once the store is back.
func TestStorageLocationStoreGoesAway(t *testing.T) {
	testenv.Require(t, env)
	s := minio.Start(t, minio.Options{Buckets: []string{"backups"}})
	name := uniqueName(t, "bsl")
	bsl := location(t, name, s, nil)
	patch := client.MergeFrom(bsl.DeepCopy())
	bsl.Spec.ProbeInterval = &metav1.Duration{Duration: 30 * time.Second} // the least the API accepts
	if err := env.Client.Patch(ctxFor(t), bsl, patch); err != nil {
		t.Fatal(err)
	}
	waitLocation(t, name, metav1.ConditionTrue)

	s.Stop()
	got := waitLocation(t, name, metav1.ConditionFalse)
	if r := readyCondition(got.Status.Conditions); r.Reason != "StoreUnreachable" {
		t.Fatalf("Ready = %+v", r)
	}
	out, err := env.Kubectl(ctxFor(t), "get", "bsl", name, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "cannot be reached") {
		t.Errorf("kubectl get bsl -o wide does not show why:\n%s", out)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	waitLocation(t, name, metav1.ConditionTrue)
}

// TestRecoveryRecipientsAreChecked: the CRD refuses a recipient that is not shaped like
// an age public key, naming the field; one that is shaped like one but fails its
// checksum (a typo) is admitted, and the location is Stalled saying which entry is
// wrong, so that no repository is created whose key could not be escrowed; fixing it
// makes the location Ready and describe shows whether keys are escrowed.
func TestRecoveryRecipientsAreChecked(t *testing.T) {
	testenv.Require(t, env)
	id := newIdentity(t)
	good := id.Recipient().String()
	name := uniqueName(t, "bsl")
	bad := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.BackupStorageLocationSpec{
		Filesystem: &v1.FilesystemLocation{Path: t.TempDir()}, RecoveryRecipients: []string{good, "ssh-ed25519 AAAAC3Nza"}}}
	err := env.Client.Create(ctxFor(t), bad)
	if err == nil || !strings.Contains(err.Error(), "spec.recoveryRecipients must be age X25519 public keys") {
		t.Fatalf("creating a location with an SSH key as recipient: %v", err)
	}
	t.Logf("refused: %v", err)

	typo := good[:len(good)-1] + map[bool]string{true: "q", false: "p"}[good[len(good)-1] != 'q']
	bsl := fsLocation(t, name, good, typo)
	got := waitLocation(t, name, metav1.ConditionFalse)
	if r := readyCondition(got.Status.Conditions); r.Reason != ReasonInvalidRecoveryRecipient || !conditions.IsStalled(got.Status.Conditions) ||
		!strings.Contains(r.Message, "spec.recoveryRecipients[1]") {
		t.Fatalf("Ready = %+v", r)
	}
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.RecoveryRecipients = []string{good}
	if err := env.Client.Patch(ctxFor(t), got, patch); err != nil {
		t.Fatal(err)
	}
	ready := readyCondition(waitLocation(t, bsl.Name, metav1.ConditionTrue).Status.Conditions)
	if !strings.Contains(ready.Message, "escrowed in the store to 1 recovery recipient") {
		t.Errorf("Ready message %q", ready.Message)
	}
	waitLocationCondition(t, name, v1.ConditionKeysEscrowed, metav1.ConditionTrue)
	out, err := env.Kubectl(ctxFor(t), "describe", "bsl", name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "KeysEscrowed") {
		t.Errorf("kubectl describe bsl does not say whether keys are escrowed:\n%s", out)
	}
}
