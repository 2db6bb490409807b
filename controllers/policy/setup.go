package policy

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

// Options configure the policy controller.
type Options struct {
	// HostPathRoots are the host directories under which hostPath PersistentVolumes
	// are backed up (--host-path-roots); a claim on one elsewhere is skipped HostPath.
	HostPathRoots hostpath.Roots
	// Reader configures the reader pods of claims no pod uses.
	Reader restore.ClaimPodOptions
}

// Setup adds the VolumeBackupPolicy controller and its validating webhook to the
// manager and returns the CEL engine both share: coverage evaluates the same compiled
// selectors with it, and the controller drops a deleted policy's from it.
func Setup(mgr ctrl.Manager, opts Options) (*celpolicy.Engine, error) {
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return nil, fmt.Errorf("building the CEL engine: %w", err)
	}
	if err := (&VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Cache: mgr.GetCache(), Engine: engine, HostPathRoots: opts.HostPathRoots, Reader: opts.Reader}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the policy controller: %w", err)
	}
	if err := (&VolumeBackupPolicyValidator{Engine: engine}).SetupWebhookWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the policy webhook: %w", err)
	}
	return engine, nil
}

// CacheOptions are the manager's cache options `holdfast manager` uses (and the
// control-plane bench): every cached object is kept without its managedFields, which
// no controller reads (server-side apply sends a field owner, not the cache's copy).
// At 10,000 pods and as many PodVolumeBackups per run they are a tenth of the
// manager's heap; a cached Get or List also copies them on every read.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
}
