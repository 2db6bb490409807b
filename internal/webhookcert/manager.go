package webhookcert

import (
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Modes of the manager's --webhook-cert-mode flag.
const (
	// ModeSelfSigned: the manager issues, rotates and injects its own certificate.
	ModeSelfSigned = "self-signed"
	// ModeExternal: something else (cert-manager) writes tls.crt and tls.key into the
	// webhook certificate directory and the caBundle into the webhook configurations.
	ModeExternal = "external"
)

// AddToManager runs a Rotator in mgr and makes mgr's webhook server serve its
// certificate: the server's TLS handshakes wait for the first certificate, and the
// manager's /readyz fails until then. opts.Client defaults to an uncached client of
// mgr's config.
func AddToManager(mgr manager.Manager, opts Options) (*Rotator, error) {
	if opts.Client == nil {
		c, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
		if err != nil {
			return nil, fmt.Errorf("webhookcert: creating a client: %w", err)
		}
		opts.Client = c
	}
	if opts.Log.GetSink() == nil {
		opts.Log = mgr.GetLogger().WithName("webhook-cert")
	}
	r, err := New(opts)
	if err != nil {
		return nil, err
	}
	server, ok := mgr.GetWebhookServer().(*webhook.DefaultServer)
	if !ok {
		return nil, fmt.Errorf("webhookcert: the manager's webhook server is a %T; only *webhook.DefaultServer can serve the self-signed certificate", mgr.GetWebhookServer())
	}
	server.Options.TLSOpts = append(server.Options.TLSOpts, r.ConfigureTLS)
	if err := mgr.Add(r); err != nil {
		return nil, fmt.Errorf("webhookcert: adding the rotator: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook-cert", r.ReadyCheck); err != nil {
		return nil, fmt.Errorf("webhookcert: adding the readiness check: %w", err)
	}
	return r, nil
}
