package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/mover"
	"github.com/holdfast-dev/holdfast/agent/volumepath"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Options configure the agent of one node.
type Options struct {
	// NodeName is the node whose work this agent does.
	NodeName string
	// KubeletRoot is the kubelet's root directory as mounted in the agent.
	KubeletRoot string
	// Namespace is the operator namespace (key and credentials Secrets).
	Namespace string
	// Concurrency bounds the volumes moved at once on this node.
	Concurrency int
	// WorkDir holds a private directory per job (repository config, credentials).
	WorkDir string
	// CacheDir holds the repository caches that backups keep between jobs and each
	// running restore's cache (see caches); CacheSizeBytes is the budget of the kept
	// caches together (default 1 GiB).
	CacheDir       string
	CacheSizeBytes int64
	// ResticPath is the restic binary handed to the data mover.
	ResticPath string
	// ProgressInterval is how often status shows progress while data moves.
	ProgressInterval time.Duration
	// MoverCommand returns the command that runs mover.Serve in a child process.
	// The default re-executes this binary as `holdfast agent-mover`.
	MoverCommand func(ctx context.Context) *exec.Cmd
}

// Agent holds what both reconcilers share.
type Agent struct {
	client.Client
	// apiReader reads objects the agent does not cache (claims, volumes, Secrets in
	// the operator namespace) straight from the API server.
	apiReader client.Reader
	recorder  events.EventRecorder
	opts      Options
	caches    *caches
}

// SetupWithManager registers the PodVolumeBackup and PodVolumeRestore reconcilers of
// this node. The manager's cache must be limited to the node's pods and work objects.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	if opts.NodeName == "" {
		return fmt.Errorf("the agent needs a node name")
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.WorkDir == "" {
		opts.WorkDir = filepath.Join(os.TempDir(), "holdfast-agent")
	}
	if opts.MoverCommand == nil {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the agent binary to run the data mover: %w", err)
		}
		opts.MoverCommand = func(ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, self, "agent-mover")
		}
	}
	if err := os.MkdirAll(opts.WorkDir, 0o700); err != nil {
		return fmt.Errorf("creating the agent work directory: %w", err)
	}
	if opts.CacheDir == "" {
		opts.CacheDir = filepath.Join(os.TempDir(), "holdfast-cache")
	}
	if opts.CacheSizeBytes <= 0 {
		opts.CacheSizeBytes = 1 << 30
	}
	caches, err := newCaches(opts.CacheDir, opts.CacheSizeBytes)
	if err != nil {
		return fmt.Errorf("creating the agent cache directory: %w", err)
	}
	a := &Agent{
		Client:    mgr.GetClient(),
		apiReader: mgr.GetAPIReader(),
		recorder:  mgr.GetEventRecorder("holdfast-agent"),
		opts:      opts,
		caches:    caches,
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	slots := make(chan struct{}, opts.Concurrency)
	if err := (&PodVolumeBackupReconciler{Agent: a, jobs: newJobs(slots)}).setup(mgr); err != nil {
		return err
	}
	return (&PodVolumeRestoreReconciler{Agent: a, jobs: newJobs(slots)}).setup(mgr)
}

// target is a resolved volume: its pod and its directory on this node.
type target struct {
	pod *corev1.Pod
	dir string
}

// resolveTarget finds the pod (pinned by UID, on this node) and its volume directory.
// Errors are sentences for status.message.
func (a *Agent) resolveTarget(ctx context.Context, namespace string, ref v1.PodReference, volume string) (target, error) {
	pod := &corev1.Pod{}
	if err := a.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return target{}, fmt.Errorf("pod %s no longer exists on node %s", ref.Name, a.opts.NodeName)
		}
		return target{}, err
	}
	if string(pod.UID) != ref.UID {
		return target{}, fmt.Errorf("pod %s was replaced by a new pod with the same name (uid %s, expected %s)", ref.Name, pod.UID, ref.UID)
	}
	if pod.Spec.NodeName != a.opts.NodeName {
		return target{}, fmt.Errorf("pod %s runs on node %q, not on %s", ref.Name, pod.Spec.NodeName, a.opts.NodeName)
	}
	pv, err := a.boundVolume(ctx, pod, volume)
	if err != nil {
		return target{}, err
	}
	dir, err := volumepath.Resolve(a.opts.KubeletRoot, pod, volume, pv)
	if err != nil {
		return target{}, err
	}
	return target{pod: pod, dir: dir}, nil
}

// boundVolume returns the PersistentVolume behind a claim volume, nil for others.
func (a *Agent) boundVolume(ctx context.Context, pod *corev1.Pod, volume string) (*corev1.PersistentVolume, error) {
	var claim string
	for _, v := range pod.Spec.Volumes {
		if v.Name != volume {
			continue
		}
		switch {
		case v.PersistentVolumeClaim != nil:
			claim = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			claim = pod.Name + "-" + v.Name
		}
	}
	if claim == "" {
		return nil, nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := a.apiReader.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: claim}, pvc); err != nil {
		return nil, fmt.Errorf("reading claim %s of volume %s: %w", claim, volume, err)
	}
	if pvc.Spec.VolumeName == "" {
		return nil, fmt.Errorf("claim %s of volume %s is not bound", claim, volume)
	}
	pv := &corev1.PersistentVolume{}
	if err := a.apiReader.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, pv); err != nil {
		return nil, fmt.Errorf("reading PersistentVolume %s of claim %s: %w", pvc.Spec.VolumeName, claim, err)
	}
	return pv, nil
}

// errNotReady means the repository is not usable yet; the work waits for it.
type errNotReady struct{ msg string }

func (e errNotReady) Error() string { return e.msg }

// repositoryJob fills the repository part of a mover job: the location, its
// credentials and the repository's own key. A repository that is not Ready yet gives
// errNotReady; one that is Stalled gives its reason.
func (a *Agent) repositoryJob(ctx context.Context, namespace, repoName string) (mover.Job, error) {
	repo := &v1.BackupRepository{}
	if err := a.Get(ctx, types.NamespacedName{Namespace: namespace, Name: repoName}, repo); err != nil {
		if apierrors.IsNotFound(err) {
			return mover.Job{}, errNotReady{fmt.Sprintf("waiting for BackupRepository %s/%s to be created", namespace, repoName)}
		}
		return mover.Job{}, err
	}
	if !conditions.IsReady(repo.Status.Conditions) {
		msg := conditions.ReadyMessage(repo.Status.Conditions)
		if conditions.IsStalled(repo.Status.Conditions) {
			return mover.Job{}, fmt.Errorf("BackupRepository %s/%s cannot be used: %s", namespace, repoName, msg)
		}
		if msg == "" {
			msg = "not initialised yet"
		}
		return mover.Job{}, errNotReady{fmt.Sprintf("waiting for BackupRepository %s/%s to be ready: %s", namespace, repoName, msg)}
	}
	loc := &v1.BackupStorageLocation{}
	if err := a.apiReader.Get(ctx, types.NamespacedName{Name: repo.Spec.StorageLocation}, loc); err != nil {
		return mover.Job{}, fmt.Errorf("reading BackupStorageLocation %s: %w", repo.Spec.StorageLocation, err)
	}
	job := mover.Job{
		Uploader:   repo.Spec.Uploader,
		Namespace:  namespace,
		Location:   loc.Spec,
		ResticPath: a.opts.ResticPath,
	}
	if s3 := loc.Spec.S3; s3 != nil {
		creds := &corev1.Secret{}
		if err := a.apiReader.Get(ctx, types.NamespacedName{Namespace: a.opts.Namespace, Name: s3.CredentialsSecretRef.Name}, creds); err != nil {
			return mover.Job{}, fmt.Errorf("reading the credentials Secret %s/%s of BackupStorageLocation %s: %w",
				a.opts.Namespace, s3.CredentialsSecretRef.Name, loc.Name, err)
		}
		job.Credentials = creds.Data
	}
	key := &corev1.Secret{}
	if err := a.apiReader.Get(ctx, types.NamespacedName{Namespace: a.opts.Namespace, Name: repo.Status.KeySecretName}, key); err != nil {
		return mover.Job{}, fmt.Errorf("reading the key Secret %s/%s of BackupRepository %s/%s: %w",
			a.opts.Namespace, repo.Status.KeySecretName, namespace, repoName, err)
	}
	if len(key.Data[repository.KeySecretKey]) == 0 {
		return mover.Job{}, fmt.Errorf("the key Secret %s/%s has no %q", a.opts.Namespace, repo.Status.KeySecretName, repository.KeySecretKey)
	}
	job.Password = string(key.Data[repository.KeySecretKey])
	return job, nil
}

// runMover runs one job in a child process with a private work directory, publishing
// progress at most every ProgressInterval.
func (a *Agent) runMover(ctx context.Context, job mover.Job, publish func(mover.Progress)) (mover.Result, error) {
	work, err := os.MkdirTemp(a.opts.WorkDir, "job-")
	if err != nil {
		return mover.Result{}, fmt.Errorf("creating a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	job.WorkDir = work
	// Backups borrow their repository's kept cache. Restores start cold in a cache of
	// their own on the same disk: they fill the data cache with whole packs, which a
	// kept cache would carry to the next job for nothing.
	var release func()
	if job.Kind == mover.KindBackup {
		job.CacheDir, release = a.caches.lend(cacheKey(job))
	} else if job.CacheDir, release, err = a.caches.scratch(); err != nil {
		// The work directory still takes the cache, as before there was a cache volume.
		ctrl.LoggerFrom(ctx).Error(err, "creating a restore cache; the restore keeps its cache in the work directory")
	}
	defer release()
	log := ctrl.LoggerFrom(ctx).WithName("mover")
	var last time.Time
	return mover.Run(ctx, a.opts.MoverCommand(ctx), job, func(p mover.Progress) {
		if time.Since(last) >= a.opts.ProgressInterval {
			last = time.Now()
			publish(p)
		}
	}, func(line string) { log.Info(line) })
}

func toProgress(p mover.Progress) v1.Progress {
	return v1.Progress{TotalBytes: p.TotalBytes, BytesDone: p.BytesDone, TotalFiles: p.TotalFiles, FilesDone: p.FilesDone}
}

// CacheOptions limit the agent's cache to its node: its pods (spec.nodeName) and its
// PodVolumeBackups and PodVolumeRestores (the spec.node selectable field), selected by
// the API server, so no agent receives or holds other nodes' objects.
func CacheOptions(nodeName string) cache.Options {
	onNode := fields.OneTermEqualSelector("spec.node", nodeName)
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:          {Field: fields.OneTermEqualSelector("spec.nodeName", nodeName)},
		&v1.PodVolumeBackup{}:  {Field: onNode},
		&v1.PodVolumeRestore{}: {Field: onNode},
	}}
}
