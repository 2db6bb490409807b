package policy

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Setup adds the VolumeBackupPolicy controller and its validating webhook to the
// manager and returns the CEL engine both share: coverage evaluates the same compiled
// selectors with it, and the controller drops a deleted policy's from it.
func Setup(mgr ctrl.Manager) (*celpolicy.Engine, error) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return nil, fmt.Errorf("building the CEL engine: %w", err)
	}
	if err := (&VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the policy controller: %w", err)
	}
	if err := (&VolumeBackupPolicyValidator{Engine: engine}).SetupWebhookWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the policy webhook: %w", err)
	}
	return engine, nil
}
