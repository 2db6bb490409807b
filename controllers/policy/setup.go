package policy

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Setup adds the VolumeBackupPolicy controller and its validating webhook to the
// manager; both share one CEL engine.
func Setup(mgr ctrl.Manager) error {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return fmt.Errorf("building the CEL engine: %w", err)
	}
	if err := (&VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the policy controller: %w", err)
	}
	if err := (&VolumeBackupPolicyValidator{Engine: engine}).SetupWebhookWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the policy webhook: %w", err)
	}
	return nil
}
