package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Names of the objects config/default installs; the defaults of Options.
const (
	DefaultSecretName                     = "holdfast-webhook-server-cert"
	DefaultServiceName                    = "holdfast-webhook-service"
	DefaultValidatingWebhookConfiguration = "holdfast-validating-webhook-configuration"
	DefaultMutatingWebhookConfiguration   = "holdfast-mutating-webhook-configuration"
)

// Defaults of the timing options.
const (
	DefaultValidity       = 365 * 24 * time.Hour
	DefaultRotateBefore   = 90 * 24 * time.Hour
	DefaultCAValidity     = 5 * 365 * 24 * time.Hour
	DefaultCARotateBefore = 365 * 24 * time.Hour
	// DefaultCAOverlap is how long a new CA is in every caBundle before the webhook
	// serves a certificate it signed. Each kube-apiserver reads webhook configurations
	// through its own watch; an hour is far more than one that is merely slow needs.
	DefaultCAOverlap     = time.Hour
	DefaultCheckInterval = time.Minute
)

// Options configure a Rotator. Zero values take the defaults above.
type Options struct {
	// Client reads and writes the Secret and the webhook configurations. It must read
	// from the API server, not from a cache: the Rotator runs before caches sync and
	// its RBAC grants get by name, not list or watch.
	Client client.Client
	// Namespace is the operator namespace: the Secret lives there and the Service is
	// <ServiceName>.<Namespace>.svc.
	Namespace   string
	SecretName  string
	ServiceName string
	// CertDir, when set, receives tls.crt, tls.key and ca.crt each time the
	// certificate changes, for whatever else reads them. The webhook server itself is
	// served from memory (see ConfigureTLS) so a rotation takes effect at once.
	CertDir string
	// ValidatingWebhookConfigurations and MutatingWebhookConfigurations are the
	// objects whose webhooks' clientConfig.caBundle is kept equal to the CA bundle.
	// One that does not exist (yet) is skipped and looked at again at the next check.
	// Nil takes the default name; an empty non-nil slice patches none.
	ValidatingWebhookConfigurations []string
	MutatingWebhookConfigurations   []string
	// Validity is how long a new serving certificate is valid (never beyond its CA).
	Validity time.Duration
	// RotateBefore replaces the serving certificate this long before it expires, with
	// one signed by the same CA, so the caBundle does not change.
	RotateBefore time.Duration
	// CAValidity is how long a new CA is valid.
	CAValidity time.Duration
	// CARotateBefore starts renewing the CA this long before it expires. It must be
	// longer than RotateBefore and CAOverlap.
	CARotateBefore time.Duration
	// CAOverlap is how long a new CA is in every caBundle before a serving certificate
	// it signed is served: the time every API server gets to see the new bundle.
	CAOverlap time.Duration
	// CheckInterval is how often the Secret and the caBundles are checked. A check
	// costs a few GETs, and it is what repairs a caBundle that a sync from Git
	// emptied, or patches a webhook configuration created after the manager started.
	CheckInterval time.Duration
	// Now is the clock; tests move it.
	Now func() time.Time
	Log logr.Logger
}

func (o *Options) setDefaults() {
	if o.SecretName == "" {
		o.SecretName = DefaultSecretName
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	if o.ValidatingWebhookConfigurations == nil {
		o.ValidatingWebhookConfigurations = []string{DefaultValidatingWebhookConfiguration}
	}
	if o.MutatingWebhookConfigurations == nil {
		o.MutatingWebhookConfigurations = []string{DefaultMutatingWebhookConfiguration}
	}
	if o.Validity == 0 {
		o.Validity = DefaultValidity
	}
	if o.RotateBefore == 0 {
		o.RotateBefore = DefaultRotateBefore
	}
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.CARotateBefore == 0 {
		o.CARotateBefore = DefaultCARotateBefore
	}
	if o.CAOverlap == 0 {
		o.CAOverlap = DefaultCAOverlap
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Rotator is a controller-runtime Runnable that keeps the webhook serving certificate
// valid. Every manager replica runs one (it does not need leader election): each
// serves webhooks, and all share the one Secret.
type Rotator struct {
	opts Options

	mu     sync.RWMutex
	cert   *tls.Certificate
	caPEM  []byte
	ready  chan struct{}
	readyO sync.Once
}

// New returns a Rotator; Start runs it.
func New(opts Options) (*Rotator, error) {
	opts.setDefaults()
	if opts.Client == nil {
		return nil, errors.New("webhookcert: Options.Client is required")
	}
	if opts.Namespace == "" {
		return nil, errors.New("webhookcert: Options.Namespace is required")
	}
	if opts.RotateBefore >= opts.Validity {
		return nil, fmt.Errorf("webhookcert: RotateBefore (%s) must be shorter than Validity (%s)", opts.RotateBefore, opts.Validity)
	}
	if opts.CARotateBefore >= opts.CAValidity {
		return nil, fmt.Errorf("webhookcert: CARotateBefore (%s) must be shorter than CAValidity (%s)", opts.CARotateBefore, opts.CAValidity)
	}
	// A CA that is not yet due for renewal must sign serving certificates that are not
	// due either, and the overlap must end while the old CA is still valid.
	if opts.CARotateBefore <= opts.RotateBefore || opts.CARotateBefore <= opts.CAOverlap {
		return nil, fmt.Errorf("webhookcert: CARotateBefore (%s) must be longer than RotateBefore (%s) and CAOverlap (%s)", opts.CARotateBefore, opts.RotateBefore, opts.CAOverlap)
	}
	return &Rotator{opts: opts, ready: make(chan struct{})}, nil
}

// NeedLeaderElection is false: every replica serves webhooks, so every replica needs
// the certificate.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Start makes sure a valid certificate exists, then checks it every CheckInterval
// until ctx ends. A failed check is retried sooner, with a back-off; it does not stop
// the manager, since the certificate already served stays valid for a long time.
func (r *Rotator) Start(ctx context.Context) error {
	log := r.opts.Log.WithValues("secret", r.opts.Namespace+"/"+r.opts.SecretName)
	retry := time.Second
	for {
		wait := r.opts.CheckInterval
		if err := r.sync(ctx, log); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error(err, "checking the webhook serving certificate; retrying", "after", retry)
			wait, retry = retry, min(2*retry, r.opts.CheckInterval)
		} else {
			retry = time.Second
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// Ready is closed once a valid certificate is served and the caBundles are set.
func (r *Rotator) Ready() <-chan struct{} { return r.ready }

// ReadyCheck is a healthz.Checker for the manager's /readyz: a replica without a
// certificate must not receive webhook calls.
func (r *Rotator) ReadyCheck(_ *http.Request) error {
	select {
	case <-r.ready:
		return nil
	default:
		return errors.New("the webhook serving certificate is not ready yet")
	}
}

// ConfigureTLS makes a TLS server serve the current certificate; add it to the webhook
// server's TLSOpts. A handshake that arrives before the first certificate waits for it.
func (r *Rotator) ConfigureTLS(cfg *tls.Config) {
	cfg.GetCertificate = r.GetCertificate
}

// GetCertificate returns the current certificate, waiting for the first one.
func (r *Rotator) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx := context.Background()
	if hello != nil && hello.Context() != nil {
		ctx = hello.Context()
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("no webhook serving certificate yet: %w", ctx.Err())
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// CABundle returns the PEM bundle the webhook configurations trust, or nil before the
// first certificate.
func (r *Rotator) CABundle() []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return bytes.Clone(r.caPEM)
}

// sync brings the Secret, the served certificate, the files and the caBundles to a
// valid certificate. The order is what keeps API servers and webhook in agreement: the
// Secret's bundle is written to every caBundle before its certificate is served, and a
// new CA is recorded as trusted only after that write (see bundle.next).
func (r *Rotator) sync(ctx context.Context, log logr.Logger) error {
	b, pair, secret, err := r.ensureSecret(ctx, log)
	if err != nil {
		return err
	}
	if err := r.patchCABundles(ctx, log, b.caPEM); err != nil {
		return err
	}
	if len(b.nextCAPEM) > 0 && b.nextTrustedSince.IsZero() {
		r.recordTrusted(ctx, log, secret, b)
	}
	r.mu.Lock()
	changed := r.cert == nil || !bytes.Equal(r.cert.Certificate[0], pair.Certificate[0]) || !bytes.Equal(r.caPEM, b.caPEM)
	r.cert, r.caPEM = pair, b.caPEM
	r.mu.Unlock()
	if changed && r.opts.CertDir != "" {
		if err := writeFiles(r.opts.CertDir, b); err != nil {
			return err
		}
	}
	if changed {
		log.Info("serving the webhook certificate", "notAfter", stamp(pair.Leaf.NotAfter), "serial", pair.Leaf.SerialNumber.String(),
			"issuer", fmt.Sprintf("%x", pair.Leaf.AuthorityKeyId), "trustedCAs", len(parseCerts(b.caPEM)))
	}
	r.readyO.Do(func() { close(r.ready) })
	return nil
}

// recordTrusted notes in the Secret that every caBundle holds the next CA from now on,
// which starts the overlap. A lost race is left to the next check.
func (r *Rotator) recordTrusted(ctx context.Context, log logr.Logger, secret *corev1.Secret, b bundle) {
	b.nextTrustedSince = r.opts.Now()
	secret.Data = b.data()
	if err := r.opts.Client.Update(ctx, secret); err != nil {
		log.Info("could not record that the caBundles hold the next CA; trying again at the next check", "error", err.Error())
		return
	}
	log.Info("every caBundle holds the next CA; it signs the served certificate after the overlap",
		"overlap", r.opts.CAOverlap.String(), "after", stamp(b.nextTrustedSince.Add(r.opts.CAOverlap)))
}

// ensureSecret returns the bundle the Secret must hold now (see bundle.next), its key
// pair and the Secret as written, creating or updating the Secret when needed. Replicas
// race on it: a create or update that loses (AlreadyExists, Conflict) reads the
// winner's Secret and decides again from it.
func (r *Rotator) ensureSecret(ctx context.Context, log logr.Logger) (bundle, *tls.Certificate, *corev1.Secret, error) {
	key := types.NamespacedName{Namespace: r.opts.Namespace, Name: r.opts.SecretName}
	tm := timings{
		validity: r.opts.Validity, rotateBefore: r.opts.RotateBefore,
		caValidity: r.opts.CAValidity, caRotateBefore: r.opts.CARotateBefore, caOverlap: r.opts.CAOverlap,
	}
	for attempt := 0; ; attempt++ {
		now := r.opts.Now()
		secret := &corev1.Secret{}
		err := r.opts.Client.Get(ctx, key, secret)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return bundle{}, nil, nil, fmt.Errorf("reading Secret %s: %w", key, err)
		}
		var stored bundle
		if exists {
			stored = bundleFrom(secret.Data)
		}
		b, reason, err := stored.next(r.opts.ServiceName, r.opts.Namespace, now, tm)
		if err != nil {
			return bundle{}, nil, nil, err
		}
		pair, err := b.checkLeaf(r.opts.ServiceName, r.opts.Namespace, now)
		if err != nil {
			return bundle{}, nil, nil, fmt.Errorf("the certificate to serve fails its own check: %w", err)
		}
		if reason == "" {
			return b, pair, secret, nil
		}
		log.Info("changing the webhook certificate Secret", "reason", reason)
		if exists {
			secret.Type = corev1.SecretTypeTLS
			secret.Data = b.data()
			err = r.opts.Client.Update(ctx, secret)
		} else {
			secret = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Name:      key.Name,
					Namespace: key.Namespace,
					Labels: map[string]string{
						"app.kubernetes.io/managed-by": "holdfast",
						"app.kubernetes.io/part-of":    "holdfast",
					},
				},
				Type: corev1.SecretTypeTLS,
				Data: b.data(),
			}
			err = r.opts.Client.Create(ctx, secret)
		}
		switch {
		case err == nil:
			return b, pair, secret, nil
		case (apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) && attempt < 3:
			continue // another replica wrote it first: decide again from theirs
		default:
			return bundle{}, nil, nil, fmt.Errorf("writing Secret %s: %w", key, err)
		}
	}
}

// patchCABundles sets clientConfig.caBundle on every webhook of the configured
// webhook configurations that does not have it yet. It uses a JSON patch that tests
// each webhook's name, so it never rewrites anything else and fails cleanly (retried at
// the next check) if the list changed in between.
func (r *Rotator) patchCABundles(ctx context.Context, log logr.Logger, caPEM []byte) error {
	var errs []error
	for _, name := range r.opts.ValidatingWebhookConfigurations {
		obj := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		found, err := r.get(ctx, name, obj)
		if found {
			names, configs := make([]string, len(obj.Webhooks)), make([]admissionregistrationv1.WebhookClientConfig, len(obj.Webhooks))
			for i, w := range obj.Webhooks {
				names[i], configs[i] = w.Name, w.ClientConfig
			}
			err = r.patch(ctx, obj, names, configs, caPEM)
		} else if err == nil {
			log.V(1).Info("webhook configuration not found; looking again at the next check", "validatingWebhookConfiguration", name)
		}
		errs = append(errs, err)
	}
	for _, name := range r.opts.MutatingWebhookConfigurations {
		obj := &admissionregistrationv1.MutatingWebhookConfiguration{}
		found, err := r.get(ctx, name, obj)
		if found {
			names, configs := make([]string, len(obj.Webhooks)), make([]admissionregistrationv1.WebhookClientConfig, len(obj.Webhooks))
			for i, w := range obj.Webhooks {
				names[i], configs[i] = w.Name, w.ClientConfig
			}
			err = r.patch(ctx, obj, names, configs, caPEM)
		} else if err == nil {
			log.V(1).Info("webhook configuration not found; looking again at the next check", "mutatingWebhookConfiguration", name)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Rotator) get(ctx context.Context, name string, obj client.Object) (bool, error) {
	err := r.opts.Client.Get(ctx, types.NamespacedName{Name: name}, obj)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("reading %T %s: %w", obj, name, err)
	}
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func (r *Rotator) patch(ctx context.Context, obj client.Object, names []string, configs []admissionregistrationv1.WebhookClientConfig, caPEM []byte) error {
	var ops []jsonPatchOp
	for i, cc := range configs {
		if bytes.Equal(cc.CABundle, caPEM) {
			continue
		}
		ops = append(ops,
			jsonPatchOp{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: names[i]},
			jsonPatchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: caPEM},
		)
	}
	if len(ops) == 0 {
		return nil
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := r.opts.Client.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, raw)); err != nil {
		return fmt.Errorf("patching the caBundle of %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// writeFiles replaces the files in dir, each by an atomic rename so that a reader never
// sees half a key.
func writeFiles(dir string, b bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the webhook certificate directory: %w", err)
	}
	for name, data := range b.files() {
		tmp, err := os.CreateTemp(dir, "."+name+"-")
		if err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}
