package browse

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
)

// Options configure browse sessions in the manager.
type Options struct {
	Catalog *storage.Catalog
	// Relay configures relay pods as claim pods are: helper settings and image.
	Relay restore.ClaimPodOptions
	// Endpoint is where relay pods reach the manager.
	Endpoint Endpoint
}

// Setup adds the session controller and serves relay pods on the webhook server (every
// replica serves; the controller runs on the leader).
func Setup(mgr ctrl.Manager, opts Options) error {
	if err := (&SessionReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Catalog: opts.Catalog,
		Relay: opts.Relay, Endpoint: opts.Endpoint}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the browse session controller: %w", err)
	}
	(&Server{Reader: mgr.GetAPIReader(), Reviewer: mgr.GetClient(), Catalog: opts.Catalog,
		Recorder: mgr.GetEventRecorder("holdfast-browse")}).Register(mgr)
	return nil
}
