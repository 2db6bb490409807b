package storage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/keyescrow"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/internal/version"
)

// This file finds, makes, recovers and escrows repository keys. The rules:
//   - a Secret is a repository's key only when its labels name the repository's
//     namespace, name and storage location; a Secret at the expected name that says
//     otherwise is never adopted (the repository is Stalled);
//   - a new key is made only for a repository with no data in the store and no key
//     before (status.keySecretName empty): a new key could never read old data;
//   - where the location names recovery recipients, the key is escrowed in the store
//     before the repository is initialised, and escrowed again when the recipients
//     change; a lost key is recovered from the escrow with the identity a person puts
//     in the Secret keyescrow.IdentitySecretName, and checked against the repository
//     before its Secret is re-created.

// Reasons of key trouble (Stalled) and of key events.
const (
	ReasonKeySecretMissing     = "KeySecretMissing"
	ReasonKeySecretConflict    = "KeySecretConflict"
	ReasonKeyRecoveryRequired  = "KeyRecoveryRequired"
	ReasonKeyRecoveryFailed    = "KeyRecoveryFailed"
	ReasonKeyRecovered         = "KeyRecovered"
	ReasonKeyEscrowed          = "KeyEscrowed"
	ReasonEscrowFailed         = "KeyEscrowFailed"
	ReasonNoRecoveryRecipients = "NoRecoveryRecipients"
)

// stallError stops a reconcile until a person acts: the repository is Stalled with
// reason and the one-sentence message.
type stallError struct{ reason, message string }

func (e *stallError) Error() string { return e.message }

func stall(reason, format string, args ...any) error {
	return &stallError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// keySecretLabels are the labels that make a Secret the key of brepo.
func keySecretLabels(brepo *v1.BackupRepository) map[string]string {
	return map[string]string{
		LabelRepositoryNamespace: brepo.Namespace,
		LabelRepositoryName:      identity.LabelValue(brepo.Name),
		v1.LabelStorageLocation:  identity.LabelValue(brepo.Spec.StorageLocation),
	}
}

// belongsTo reports whether the Secret's labels say it is brepo's key.
func belongsTo(s *corev1.Secret, brepo *v1.BackupRepository) bool {
	for k, v := range keySecretLabels(brepo) {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}

func describeOwner(s *corev1.Secret) string {
	ns, name, loc := s.Labels[LabelRepositoryNamespace], s.Labels[LabelRepositoryName], s.Labels[v1.LabelStorageLocation]
	if ns == "" && name == "" {
		return "is not labelled as any repository's key"
	}
	return fmt.Sprintf("is labelled as the key of repository %s/%s on storage location %q", ns, name, loc)
}

// findKeySecret returns brepo's key Secret, or nil when there is none. The labels are
// the authority: they find a key under any name (the name of an earlier scheme, or
// after the BackupRepository was deleted and created again), and a Secret at the
// name in status or at the name a new key would get is used only if they say so.
func (r *RepositoryReconciler) findKeySecret(ctx context.Context, brepo *v1.BackupRepository) (*corev1.Secret, error) {
	var list corev1.SecretList
	if err := r.Secrets.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingLabels(keySecretLabels(brepo))); err != nil {
		return nil, fmt.Errorf("listing the key Secrets of repository %s/%s: %w", brepo.Namespace, brepo.Name, err)
	}
	switch len(list.Items) {
	case 1:
		return &list.Items[0], nil
	case 0:
	default:
		names := make([]string, 0, len(list.Items))
		for i := range list.Items {
			s := &list.Items[i]
			if s.Name == brepo.Status.KeySecretName {
				return s, nil
			}
			names = append(names, s.Name)
		}
		sort.Strings(names)
		return nil, stall(ReasonKeySecretConflict, "Several Secrets in %s are labelled as this repository's key (%s) and none is the one in status.keySecretName: delete those that do not hold the key this repository was written with", r.Namespace, strings.Join(names, ", "))
	}
	for _, name := range []string{brepo.Status.KeySecretName, repository.KeySecretName(brepo.Namespace, brepo.Name)} {
		if name == "" {
			continue
		}
		s := &corev1.Secret{}
		err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, s)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("getting Secret %s/%s: %w", r.Namespace, name, err)
		}
		return nil, stall(ReasonKeySecretConflict, "Secret %s/%s %s, not of this one, so Holdfast does not use it: if it holds this repository's key, label it %s=%s, %s=%s and %s=%s; otherwise rename one of the two repositories' storage locations or namespaces",
			r.Namespace, name, describeOwner(s), LabelRepositoryNamespace, brepo.Namespace, LabelRepositoryName, identity.LabelValue(brepo.Name), v1.LabelStorageLocation, identity.LabelValue(brepo.Spec.StorageLocation))
	}
	return nil, nil
}

// ensureKey returns the repository's key: from its Secret; recovered from its escrow
// when the Secret is gone and the repository's data is in the store; or, for a
// repository with no data and no key before, a new random key stored in a new Secret
// before anything is written to the store. It returns a *stallError when a person
// must act.
func (r *RepositoryReconciler) ensureKey(ctx context.Context, brepo *v1.BackupRepository, cfg repository.Config) (*corev1.Secret, error) {
	secret, err := r.findKeySecret(ctx, brepo)
	if err != nil || secret != nil {
		return secret, err
	}
	hasData, err := repository.HasData(ctx, r.Pool.Config(cfg))
	if err != nil {
		return nil, err
	}
	escrowed, err := keyescrow.Exists(ctx, cfg.Store, cfg.Uploader, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	hadKey := brepo.Status.KeySecretName != ""
	switch {
	case (hasData || hadKey) && escrowed:
		return r.recoverKey(ctx, brepo, cfg)
	case hasData || hadKey:
		name := brepo.Status.KeySecretName
		if name == "" {
			name = repository.KeySecretName(brepo.Namespace, brepo.Name)
		}
		return nil, stall(ReasonKeySecretMissing, "The key Secret %s/%s of this repository is missing and %s holds its data but no key escrow: restore the Secret, with its labels, from your backup of repository keys (a new key cannot read the existing data)", r.Namespace, name, cfg.URL())
	}
	key, err := repository.GenerateKey()
	if err != nil {
		return nil, err
	}
	secret, err = r.createKeySecret(ctx, brepo, key, nil)
	if err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("created the repository key Secret", "secret", secret.Name)
	r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonKeySecretCreated, fmt.Sprintf("Stored a new repository key in Secret %s/%s", r.Namespace, secret.Name))
	return secret, nil
}

// createKeySecret stores key in a new Secret labelled for brepo. A Secret of that name
// that appeared meanwhile is reported as a conflict, never adopted.
func (r *RepositoryReconciler) createKeySecret(ctx context.Context, brepo *v1.BackupRepository, key string, annotations map[string]string) (*corev1.Secret, error) {
	labels := keySecretLabels(brepo)
	labels[v1.LabelManagedBy] = v1.ManagedByValue
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: repository.KeySecretName(brepo.Namespace, brepo.Name), Namespace: r.Namespace, Labels: labels, Annotations: annotations},
		Type:       corev1.SecretTypeOpaque,
		Immutable:  ptr(true),
		Data:       map[string][]byte{repository.KeySecretKey: []byte(key)},
	}
	if err := r.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Another reconcile of this repository may have made it: look again, by labels.
			return nil, fmt.Errorf("the key Secret %s/%s appeared while it was being created; looking again", r.Namespace, secret.Name)
		}
		return nil, fmt.Errorf("creating the key Secret %s/%s of repository %s/%s: %w", r.Namespace, secret.Name, brepo.Namespace, brepo.Name, err)
	}
	return secret, nil
}

// AnnotationRecoveredFrom on a key Secret says from which escrow its key was recovered.
const AnnotationRecoveredFrom = "backup.holdfast.dev/recovered-from"

// recoverKey decrypts the repository's escrow with the identity a person stored in the
// identity Secret, checks that the key opens the repository and only then stores it in
// a new key Secret. Until then it writes nothing, to the store or to the cluster.
func (r *RepositoryReconciler) recoverKey(ctx context.Context, brepo *v1.BackupRepository, cfg repository.Config) (*corev1.Secret, error) {
	escrowURL := cfg.Store.URL("") + keyescrow.ObjectPath(cfg.Uploader, cfg.Namespace)
	idSecret := &corev1.Secret{}
	err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: keyescrow.IdentitySecretName}, idSecret)
	if apierrors.IsNotFound(err) {
		return nil, stall(ReasonKeyRecoveryRequired, "The key Secret of this repository is missing, its data is at %s and its key is escrowed at %s: to recover the key, create the identity Secret with the age identity of one of the location's recovery recipients: kubectl -n %s create secret generic %s --from-file=%s=<identity file>",
			cfg.URL(), escrowURL, r.Namespace, keyescrow.IdentitySecretName, keyescrow.IdentityKey)
	}
	if err != nil {
		return nil, fmt.Errorf("getting Secret %s/%s: %w", r.Namespace, keyescrow.IdentitySecretName, err)
	}
	failed := func(format string, args ...any) error {
		return stall(ReasonKeyRecoveryFailed, "Recovering the key from %s with the identity in Secret %s/%s failed: "+format, append([]any{escrowURL, r.Namespace, keyescrow.IdentitySecretName}, args...)...)
	}
	identities, err := keyescrow.ParseIdentities(idSecret.Data[keyescrow.IdentityKey])
	if err != nil {
		return nil, failed("its key %q is %v; create it again from the identity file", keyescrow.IdentityKey, err)
	}
	data, err := keyescrow.Read(ctx, cfg.Store, cfg.Uploader, cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("reading the key escrow %s: %w", escrowURL, err)
	}
	esc, err := keyescrow.Open(data, identities)
	if errors.Is(err, keyescrow.ErrWrongIdentity) {
		return nil, failed("the identity is not one of the recipients the key was escrowed to; create the Secret again with the identity of a recipient of this location")
	}
	if err != nil {
		return nil, failed("%v", err)
	}
	if esc.Namespace != cfg.Namespace || esc.Uploader != cfg.Uploader {
		return nil, failed("the escrow holds the %s key of namespace %s, not the %s key of %s; the store has been changed by hand", esc.Uploader, esc.Namespace, cfg.Uploader, cfg.Namespace)
	}
	check := cfg
	check.Password = esc.Password
	// Opened through the pool, the checked repository is the one used from now on.
	opened, err := r.Pool.Open(ctx, client.ObjectKeyFromObject(brepo).String(), check)
	if err == nil {
		_ = opened.Close(ctx) // the pool keeps it open; this returns the loan
	}
	var re *repository.Error
	if errors.As(err, &re) && (errors.Is(err, repository.ErrWrongKey) || errors.Is(err, repository.ErrDamaged) || errors.Is(err, repository.ErrNotInitialized)) {
		return nil, failed("the escrowed key does not open the repository: %s", re.Error())
	}
	if err != nil {
		return nil, err
	}
	secret, err := r.createKeySecret(ctx, brepo, esc.Password, map[string]string{AnnotationRecoveredFrom: escrowURL})
	if err != nil {
		return nil, err
	}
	// The escrow read back is the one in the store: no need to write it again unless
	// the location's recipients changed since.
	brepo.Status.KeyEscrow = &v1.KeyEscrowStatus{URL: escrowURL, Recipients: int32(len(esc.Recipients)),
		RecipientsDigest: keyescrow.RecipientsDigest(esc.Recipients), Time: metav1.Now()}
	msg := fmt.Sprintf("Recovered the repository key from %s with the identity in Secret %s/%s and stored it in Secret %s/%s; delete the identity Secret once every repository that needed it is Ready",
		escrowURL, r.Namespace, keyescrow.IdentitySecretName, r.Namespace, secret.Name)
	log.FromContext(ctx).Info("recovered the repository key from its escrow", "escrow", escrowURL, "secret", secret.Name)
	r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonKeyRecovered, msg)
	return secret, nil
}

// escrowBeforeInit writes the escrow of a repository about to be initialised. Without
// it the repository is not initialised: data must never exist whose key is not
// escrowed where the location asks for escrow.
func (r *RepositoryReconciler) escrowBeforeInit(ctx context.Context, brepo *v1.BackupRepository, bsl *v1.BackupStorageLocation, cfg repository.Config, secret *corev1.Secret) error {
	if len(bsl.Spec.RecoveryRecipients) == 0 {
		return nil
	}
	return r.writeEscrow(ctx, brepo, bsl, cfg, secret)
}

// ensureEscrow keeps an open repository's escrow written to the location's current
// recipients, and sets the KeyEscrowed condition.
func (r *RepositoryReconciler) ensureEscrow(ctx context.Context, brepo *v1.BackupRepository, bsl *v1.BackupStorageLocation, cfg repository.Config, secret *corev1.Secret) error {
	if len(bsl.Spec.RecoveryRecipients) == 0 {
		brepo.Status.KeyEscrow = nil
		setKeyEscrowed(brepo, metav1.ConditionFalse, ReasonNoRecoveryRecipients,
			fmt.Sprintf("Storage location %s names no recovery recipients: the key exists only in Secret %s/%s, and if this cluster's Secrets are lost the repository's data cannot be read by anyone", bsl.Name, r.Namespace, secret.Name))
		return nil
	}
	escrowURL := cfg.Store.URL("") + keyescrow.ObjectPath(cfg.Uploader, cfg.Namespace)
	if e := brepo.Status.KeyEscrow; e == nil || e.URL != escrowURL || e.RecipientsDigest != keyescrow.RecipientsDigest(bsl.Spec.RecoveryRecipients) {
		if err := r.writeEscrow(ctx, brepo, bsl, cfg, secret); err != nil {
			return err
		}
	}
	setKeyEscrowed(brepo, metav1.ConditionTrue, ReasonKeyEscrowed,
		fmt.Sprintf("The key is escrowed at %s, encrypted to the %d recovery recipient(s) of storage location %s", escrowURL, brepo.Status.KeyEscrow.Recipients, bsl.Name))
	return nil
}

func (r *RepositoryReconciler) writeEscrow(ctx context.Context, brepo *v1.BackupRepository, bsl *v1.BackupStorageLocation, cfg repository.Config, secret *corev1.Secret) error {
	escrowURL := cfg.Store.URL("") + keyescrow.ObjectPath(cfg.Uploader, cfg.Namespace)
	password, err := repository.PasswordFromSecret(secret)
	if err != nil {
		return err
	}
	esc := keyescrow.Escrow{
		Password: password, Namespace: brepo.Namespace, Repository: brepo.Name,
		Uploader: brepo.Spec.Uploader, StorageLocation: bsl.Name, RepositoryURL: cfg.URL(), KeySecretName: secret.Name,
		KeyCreated: secret.CreationTimestamp.UTC(), Escrowed: time.Now().UTC(), HoldfastVersion: version.String(),
	}
	// Which incarnation of the namespace the repository was made for (identity.Adopts).
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: brepo.Namespace}, ns); err == nil {
		esc.NamespaceUID = string(ns.UID)
	}
	if err := keyescrow.Write(ctx, cfg.Store, esc, bsl.Spec.RecoveryRecipients); err != nil {
		setKeyEscrowed(brepo, metav1.ConditionFalse, ReasonEscrowFailed, fmt.Sprintf("Writing the key escrow %s failed, will retry: %v", escrowURL, err))
		return fmt.Errorf("writing the key escrow %s: %w", escrowURL, err)
	}
	brepo.Status.KeyEscrow = &v1.KeyEscrowStatus{URL: escrowURL, Recipients: int32(len(bsl.Spec.RecoveryRecipients)),
		RecipientsDigest: keyescrow.RecipientsDigest(bsl.Spec.RecoveryRecipients), Time: metav1.Now()}
	log.FromContext(ctx).Info("escrowed the repository key", "escrow", escrowURL, "recipients", len(bsl.Spec.RecoveryRecipients))
	r.Recorder.Event(brepo, corev1.EventTypeNormal, ReasonKeyEscrowed,
		fmt.Sprintf("Escrowed the repository key at %s, encrypted to %d recovery recipient(s)", escrowURL, len(bsl.Spec.RecoveryRecipients)))
	return nil
}

func setKeyEscrowed(brepo *v1.BackupRepository, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&brepo.Status.Conditions, metav1.Condition{Type: v1.ConditionKeyEscrowed, Status: status,
		Reason: reason, Message: msg, ObservedGeneration: brepo.Generation})
}

// stalledOnKey reports whether brepo waits for a person to fix its key: a change to
// any Secret of the operator namespace may be that fix.
func stalledOnKey(brepo *v1.BackupRepository) bool {
	c := meta.FindStatusCondition(brepo.Status.Conditions, v1.ConditionStalled)
	if c == nil || c.Status != metav1.ConditionTrue {
		return false
	}
	switch c.Reason {
	case ReasonKeySecretMissing, ReasonKeySecretConflict, ReasonKeyRecoveryRequired, ReasonKeyRecoveryFailed:
		return true
	}
	return false
}
