package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
	"github.com/holdfast-dev/holdfast/agent/restorewait"
	"github.com/holdfast-dev/holdfast/agent/volumepath"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
)

// Options configure the agent of one node.
type Options struct {
	// NodeName is the node whose work this agent does.
	NodeName string
	// KubeletRoot is the kubelet's root directory as mounted in the agent.
	KubeletRoot string
	// HostPathRoots are the host directories under which the directories of hostPath
	// PersistentVolumes are backed up and restored (--host-path-roots), mounted in the
	// agent at their own paths or under HostFilesystem; a hostPath PersistentVolume
	// elsewhere is refused.
	HostPathRoots hostpath.Roots
	// HostFilesystem is where the node's filesystem (the part holding the roots) is
	// mounted in the agent: a root R is read at HostFilesystem/R, the links on the way
	// to it resolved as on the node. Empty: each root is mounted at its own path.
	HostFilesystem string
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
	// ResticLockWait is how long a restic backup or restore waits for a lock that
	// maintenance (a prune or forget) holds; zero is the repository's default (30
	// min). Work that runs out of it goes back to Pending and is tried again.
	ResticLockWait time.Duration
	// LockedRetry is how long work that found the repository locked waits before it
	// is tried again; each further time doubles it, up to 16 times (default 1 min).
	LockedRetry time.Duration
	// ProgressInterval is how often status shows progress while data moves.
	ProgressInterval time.Duration
	// ServedClaimRecheck is how often the agent looks again at a pod of its node that
	// restore-wait holds on a claim another pod's PodVolumeRestore restores, while
	// that restore has not ended (ServedPodReconciler; default 1 min).
	ServedClaimRecheck time.Duration
	// MoverCommand returns the command that runs mover.Serve in a child process.
	// The default re-executes this binary as `holdfast agent-mover`.
	MoverCommand func(ctx context.Context) *exec.Cmd
	// Manager is how the agent asks the manager for a job's repository key and store
	// credentials (package jobcredentials); the agent reads no Secret itself.
	Manager ManagerOptions
}

// ManagerOptions locate the manager and say how the agent proves who it is.
type ManagerOptions struct {
	// Service is the manager's webhook Service in the operator namespace.
	Service string
	// WebhookConfiguration is the MutatingWebhookConfiguration whose caBundle signs
	// the manager's serving certificate.
	WebhookConfiguration string
	// URL, when set, reaches the manager directly instead of through Service.
	URL string
	// TokenFile is the agent's projected ServiceAccount token with audience
	// jobcredentials.Audience.
	TokenFile string
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
	// manager hands out each job's key and credentials.
	manager *jobcredentials.Client
	// metrics are the agent's own (metrics.go).
	metrics *agentMetrics
}

// SetupWithManager registers the PodVolumeBackup and PodVolumeRestore reconcilers of
// this node, and the one that releases its pods served by another pod's restore of
// their claim. The manager's cache must be limited to the node's pods and work objects.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	if opts.NodeName == "" {
		return fmt.Errorf("the agent needs a node name")
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.LockedRetry <= 0 {
		opts.LockedRetry = time.Minute
	}
	if opts.ServedClaimRecheck <= 0 {
		opts.ServedClaimRecheck = time.Minute
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
	if opts.Manager.TokenFile == "" {
		return fmt.Errorf("the agent needs the path of its ServiceAccount token for the manager")
	}
	if err := removeStaleJobs(opts.WorkDir); err != nil {
		return err
	}
	a := &Agent{
		Client:    mgr.GetClient(),
		apiReader: mgr.GetAPIReader(),
		recorder:  mgr.GetEventRecorder("holdfast-agent"),
		opts:      opts,
		caches:    caches,
		manager: &jobcredentials.Client{
			Reader:    mgr.GetAPIReader(),
			Namespace: opts.Namespace, Service: opts.Manager.Service,
			WebhookConfiguration: opts.Manager.WebhookConfiguration,
			URL:                  opts.Manager.URL, TokenFile: opts.Manager.TokenFile,
		},
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	// One set of slots bounds backups and restores together; restores go first.
	slots := newSlots(opts.Concurrency)
	backups, restores := newJobs(slots, priorityBackup), newJobs(slots, priorityRestore)
	if a.metrics, err = registerMetrics(opts.NodeName, backups, restores); err != nil {
		return err
	}
	if err := (&PodVolumeBackupReconciler{Agent: a, jobs: backups}).setup(mgr); err != nil {
		return err
	}
	if err := (&PodVolumeRestoreReconciler{Agent: a, jobs: restores}).setup(mgr); err != nil {
		return err
	}
	return (&ServedPodReconciler{Agent: a}).setup(mgr)
}

// target is a resolved volume: its pod, its directory on this node and, for a claim,
// its PersistentVolume.
type target struct {
	pod *corev1.Pod
	dir string
	pv  *corev1.PersistentVolume
	// host is set for a hostPath PersistentVolume: dir is host.Path(), which the data
	// mover opens from its root without following links.
	host *hostpath.Dir
}

// moverDir is the directory a job names: the volume's directory, or for a hostPath
// PersistentVolume its path below the root the jail opens it from.
func (t target) moverDir() (dir, root string) {
	if t.host != nil {
		return t.host.Rel, t.host.Root
	}
	return t.dir, ""
}

// resolveTarget finds the pod (pinned by UID, on this node) and its volume directory.
// Errors are sentences for status.message; when only the directory is missing (not
// mounted), the target still has the pod and its PersistentVolume.
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
	return a.volumeOf(ctx, pod, volume)
}

// volumeOf finds a volume of a pod on this node. When only its directory cannot be
// resolved, the target still names the pod and its PersistentVolume.
func (a *Agent) volumeOf(ctx context.Context, pod *corev1.Pod, volume string) (target, error) {
	if pod.Spec.NodeName != a.opts.NodeName {
		return target{}, fmt.Errorf("pod %s runs on node %q, not on %s", pod.Name, pod.Spec.NodeName, a.opts.NodeName)
	}
	pv, err := a.boundVolume(ctx, pod, volume)
	if err != nil {
		return target{}, err
	}
	if host, ok, err := a.hostPathDir(pv); ok {
		if err != nil {
			return target{pod: pod, pv: pv}, err
		}
		return target{pod: pod, dir: host.Path(), pv: pv, host: &host}, nil
	}
	dir, err := volumepath.Resolve(a.opts.KubeletRoot, pod, volume, pv)
	if err != nil {
		// The pod and its volume are known even when the directory is not usable:
		// a read-only mount is refused before anything looks at the node.
		return target{pod: pod, pv: pv}, err
	}
	return target{pod: pod, dir: dir, pv: pv}, nil
}

// hostPathDir finds the directory of a hostPath PersistentVolume (ok) under the
// allowed roots, checked as the data mover's jail opens it: below its root, through no
// symbolic link. The kubelet does not mount such a volume under its pod directory; the
// pod runs on this node (volumeOf checked), so its directory is this node's.
func (a *Agent) hostPathDir(pv *corev1.PersistentVolume) (dir hostpath.Dir, ok bool, err error) {
	dir, ok, err = a.opts.HostPathRoots.Of(pv)
	switch {
	case !ok:
		return dir, false, nil
	case err != nil:
		// Status messages are read by tenants: the PersistentVolume is named, its
		// host path is not.
		return dir, true, fmt.Errorf("%w: hostPath PersistentVolume %s: %w (the agent reads and writes hostPath volumes only below the directories an admin allows; docs/policies.md)",
			volumepath.ErrUnsupported, pv.Name, err)
	}
	if dir.Root, err = hostpath.InHost(a.opts.HostFilesystem, dir.Root); err != nil {
		return dir, true, fmt.Errorf("hostPath PersistentVolume %s: %w", pv.Name, err)
	}
	if err := hostpath.Check(dir); err != nil {
		return dir, true, fmt.Errorf("hostPath PersistentVolume %s refused: %w", pv.Name, err)
	}
	return dir, true, nil
}

// readOnlyReason says why the pod mounts a volume read-only, or "" when a restore may
// write it (review M9). A restore writes through the node's path of the volume, past
// the container's mount: it must honour what the pod asks for itself. The mounts of
// restore-wait containers do not count: restore-wait writes nothing there (it mounts
// them read-only, or, in pods admitted before the marker volume, read-write to
// remove its markers).
func readOnlyReason(pod *corev1.Pod, volume string, pv *corev1.PersistentVolume) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name != volume {
			continue
		}
		switch {
		case v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ReadOnly:
			return "persistentVolumeClaim.readOnly is set"
		case v.CSI != nil && v.CSI.ReadOnly != nil && *v.CSI.ReadOnly:
			return "csi.readOnly is set"
		case v.NFS != nil && v.NFS.ReadOnly:
			return "nfs.readOnly is set"
		}
	}
	if pv != nil {
		switch {
		case len(pv.Spec.AccessModes) > 0 && !slices.ContainsFunc(pv.Spec.AccessModes, func(m corev1.PersistentVolumeAccessMode) bool {
			return m != corev1.ReadOnlyMany
		}):
			return fmt.Sprintf("PersistentVolume %s allows ReadOnlyMany access only", pv.Name)
		case pv.Spec.CSI != nil && pv.Spec.CSI.ReadOnly:
			return fmt.Sprintf("PersistentVolume %s sets csi.readOnly", pv.Name)
		case pv.Spec.NFS != nil && pv.Spec.NFS.ReadOnly:
			return fmt.Sprintf("PersistentVolume %s sets nfs.readOnly", pv.Name)
		}
	}
	mounts, readOnly := 0, 0
	count := func(c *corev1.Container) {
		for _, m := range c.VolumeMounts {
			if m.Name == volume {
				mounts++
				if m.ReadOnly {
					readOnly++
				}
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		if !restorewait.IsContainer(&pod.Spec.InitContainers[i]) {
			count(&pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		count(&pod.Spec.Containers[i])
	}
	for i := range pod.Spec.EphemeralContainers {
		count((*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon))
	}
	if mounts > 0 && readOnly == mounts {
		return "every container mounts it with readOnly: true"
	}
	return ""
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

// errStalled means the repository cannot be used until a person acts; the work fails.
type errStalled struct{ msg string }

func (e errStalled) Error() string { return e.msg }

// repositoryReady checks, in the agent's own view, that a job's repository can be
// used: errNotReady while it is being created, errStalled when it is Stalled, another
// error when it could not be read (passing: the reconcile is retried). The manager
// checks again before it hands over the key.
func (a *Agent) repositoryReady(ctx context.Context, namespace, repoName string) error {
	repo := &v1.BackupRepository{}
	if err := a.Get(ctx, types.NamespacedName{Namespace: namespace, Name: repoName}, repo); err != nil {
		if apierrors.IsNotFound(err) {
			return errNotReady{fmt.Sprintf("waiting for BackupRepository %s/%s to be created", namespace, repoName)}
		}
		return err
	}
	if !conditions.IsReady(repo.Status.Conditions) {
		msg := conditions.ReadyMessage(repo.Status.Conditions)
		if conditions.IsStalled(repo.Status.Conditions) {
			return errStalled{fmt.Sprintf("BackupRepository %s/%s cannot be used: %s", namespace, repoName, msg)}
		}
		if msg == "" {
			msg = "not initialised yet"
		}
		return errNotReady{fmt.Sprintf("waiting for BackupRepository %s/%s to be ready: %s", namespace, repoName, msg)}
	}
	return nil
}

// credentialsRetryMax bounds the wait between two requests to a manager that cannot
// be reached or whose repository is not ready yet.
const credentialsRetryMax = 30 * time.Second

// withCredentials fills the repository part of a job from the manager, just before
// the job runs: the key is held only while it is needed, and a restore's grant is
// checked when the data moves, not when it was planned. While the manager cannot be
// reached or the repository is not ready, it reports the reason through waiting and
// asks again; a refusal is returned (the job fails with it).
func (a *Agent) withCredentials(ctx context.Context, req jobcredentials.Request, job mover.Job, waiting func(msg string)) (mover.Job, error) {
	delay := time.Second
	for {
		g, err := a.manager.Fetch(ctx, req)
		if err == nil {
			job.Uploader, job.Namespace, job.Location = g.Uploader, g.Namespace, g.Location
			job.Credentials, job.Password, job.ResticPath = g.Credentials, g.Password, a.opts.ResticPath
			job.ResticLockWait = a.opts.ResticLockWait
			return job, nil
		}
		var e *jobcredentials.Error
		if !errors.As(err, &e) || e.Outcome == jobcredentials.Denied {
			return job, err
		}
		waiting(e.Message)
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, credentialsRetryMax)
	}
}

// removeStaleJobs removes what data movers of an earlier agent process left in the
// work directory: their repository configs hold store credentials.
func removeStaleJobs(workDir string) error {
	entries, err := os.ReadDir(workDir)
	if err != nil {
		return fmt.Errorf("reading the agent work directory: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), jobDirPrefix) {
			if err := os.RemoveAll(filepath.Join(workDir, e.Name())); err != nil {
				return fmt.Errorf("removing the leftover job directory %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// jobDirPrefix names each job's private directory in the work directory.
const jobDirPrefix = "job-"

// runMover runs one job in a child process with a private work directory, publishing
// progress at most every ProgressInterval.
func (a *Agent) runMover(ctx context.Context, job mover.Job, publish func(mover.Progress)) (mover.Result, error) {
	work, err := os.MkdirTemp(a.opts.WorkDir, jobDirPrefix)
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
	cmd := a.opts.MoverCommand(ctx)
	started := time.Now()
	res, err := mover.Run(ctx, cmd, job, func(p mover.Progress) {
		if time.Since(last) >= a.opts.ProgressInterval {
			last = time.Now()
			publish(p)
		}
	}, func(line string) { log.Info(line) })
	a.metrics.moverExited(job, time.Since(started), cmd.ProcessState)
	return res, err
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
