package storage

import (
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// Options configure the storage controllers.
type Options struct {
	// Namespace is the operator namespace: credentials and repository key Secrets.
	Namespace string
	// WorkDir is a private directory for repository config files and caches.
	WorkDir string
	// ResticPath is the restic binary.
	ResticPath string
	// MaxConcurrentMaintenance bounds the maintenance passes running at once.
	MaxConcurrentMaintenance int
	// ProbeTimeout bounds one probe of a store (default 30s).
	ProbeTimeout time.Duration
	// FinishedTTL is how long Failed and Canceled PodVolumeBackups and ended
	// PodVolumeRestores stay (DefaultFinishedTTL).
	FinishedTTL time.Duration
	// SnapshotDeleteTimeout bounds how long a deleted PodVolumeBackup waits for its
	// snapshot to be deleted before it goes without (DefaultSnapshotDeleteTimeout).
	SnapshotDeleteTimeout time.Duration
}

// Setup registers the storage location, repository, restore points and retention
// controllers. The controllers run only on the elected leader, so exactly one manager
// maintains and expires. It returns the Catalog the restore controller reads restore
// points from when their PodVolumeBackups are gone.
func Setup(mgr ctrl.Manager, opts Options) (*Catalog, error) {
	if opts.MaxConcurrentMaintenance < 1 {
		opts.MaxConcurrentMaintenance = 1
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 30 * time.Second
	}
	pool := NewPool(opts.WorkDir, opts.ResticPath)
	if err := mgr.Add(pool); err != nil {
		return nil, err
	}
	rec := mgr.GetEventRecorderFor("holdfast-storage")
	// Secrets are read directly and watched through a cache of the operator namespace
	// only: the manager may read Secrets nowhere else.
	secretCache, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the Secret cache: %w", err)
	}
	if err := mgr.Add(secretCache); err != nil {
		return nil, err
	}
	secrets := mgr.GetAPIReader()
	if err := (&StorageLocationReconciler{Client: mgr.GetClient(), Secrets: secrets, SecretCache: secretCache, Recorder: rec, Namespace: opts.Namespace, ProbeTimeout: opts.ProbeTimeout}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the storage location controller: %w", err)
	}
	if err := (&RepositoryReconciler{Client: mgr.GetClient(), Secrets: secrets, SecretCache: secretCache, Recorder: rec, Namespace: opts.Namespace, Pool: pool,
		maintenance: make(chan struct{}, opts.MaxConcurrentMaintenance)}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the repository controller: %w", err)
	}
	catalog := &Catalog{Client: mgr.GetClient(), Secrets: secrets, Namespace: opts.Namespace, Pool: pool}
	if err := (&RetentionReconciler{Client: mgr.GetClient(), Recorder: rec, Namespace: opts.Namespace, Pool: pool, Catalog: catalog, FinishedTTL: opts.FinishedTTL}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the retention controller: %w", err)
	}
	if err := (&SnapshotFinalizerReconciler{Client: mgr.GetClient(), Secrets: secrets, Recorder: rec, Namespace: opts.Namespace, Pool: pool,
		DeleteTimeout: opts.SnapshotDeleteTimeout}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the snapshot finalizer: %w", err)
	}
	if err := (&FinishedRestoreCollector{Client: mgr.GetClient(), Recorder: rec, TTL: opts.FinishedTTL}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the collector of ended restores: %w", err)
	}
	if err := (&RestorePointsReconciler{Client: mgr.GetClient(), Catalog: catalog}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the restore points controller: %w", err)
	}
	return catalog, nil
}
