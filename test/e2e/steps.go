package e2e

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	miniogo "github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/cluster"
)

// Names of what the stories deploy (see manifests/).
const (
	AppNamespace = "shop"
	PolicyName   = "gold-nightly"
	RestoreName  = "cache-from-latest"
	// BackupsDir is the host directory kustomize/local mounts into the manager and
	// the agent as the filesystem storage location "default".
	BackupsDir = "/var/lib/holdfast/backups"
	// LocalPathRoot is the host directory kustomize/local gives the manager and the
	// agent as --host-path-roots (and mounts into the agent, making it): where the
	// local-path story's provisioner, played by the test, makes its volumes.
	LocalPathRoot = "/var/lib/holdfast/local-path"
	// ManagerGID is the group the manager runs as in config/default.
	ManagerGID = 65532
)

//go:embed manifests/*.yaml
var manifests embed.FS

// Env is Holdfast installed on a running local cluster, and the means to drive it.
type Env struct {
	Cluster *cluster.Cluster
	Client  client.Client
	// Log receives one line per step; Show receives what a user would look at
	// (kubectl output) under a one-line title.
	Log  func(format string, args ...any)
	Show func(title, output string)
	// Kustomization is the directory Install applies: kustomize/local when empty, or
	// an overlay of it (an absolute path) for an install with other manager flags.
	Kustomization string
}

// silenceClientLogs gives controller-runtime a logger that discards, once: its client
// logs nothing the stories need, and without one it prints a stack trace when a client
// is made long after the process started (the stories' second cluster).
var silenceClientLogs sync.Once

// NewEnv returns an Env for the running cluster c.
func NewEnv(c *cluster.Cluster, log func(string, ...any), show func(string, string)) (*Env, error) {
	silenceClientLogs.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(backupv1alpha1.AddToScheme(s))
	cl, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = func(string, ...any) {}
	}
	if show == nil {
		show = func(string, string) {}
	}
	return &Env{Cluster: c, Client: cl, Log: log, Show: show}, nil
}

// PrepareBackupsDir makes the filesystem storage location's host directory before
// anything mounts it. Call it only while no local cluster runs: a directory left by an
// earlier cluster (make demo KEEP=1, then make cluster-down) holds repositories whose
// keys died with that cluster, so it is removed, and log says so.
func PrepareBackupsDir(log func(string, ...any)) error {
	if _, err := os.Stat(BackupsDir); err == nil {
		log("removing %s: backups of an earlier local cluster, unreadable without its repository keys", BackupsDir)
		if err := os.RemoveAll(BackupsDir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(BackupsDir, 0o755); err != nil {
		return err
	}
	// The manager runs as group 65532 (config/default); the directory must be
	// writable by that group, as docs/storage.md asks of every filesystem location.
	if err := os.Chown(BackupsDir, 0, ManagerGID); err != nil {
		return err
	}
	return os.Chmod(BackupsDir, os.ModeSetgid|0o770)
}

// RemoveBackupsDir removes what PrepareBackupsDir made and the local-path root that
// the agent of kustomize/local makes (LocalPathRoot), and their parent if empty.
func RemoveBackupsDir() error {
	for _, dir := range []string{BackupsDir, LocalPathRoot} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Dir(BackupsDir)); err != nil && !os.IsNotExist(err) && !isNotEmpty(err) {
		return err
	}
	return nil
}

func isNotEmpty(err error) bool { return strings.Contains(err.Error(), "not empty") }

// Kubectl runs the built kubectl against the cluster and returns its stdout.
func (e *Env) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.Cluster.ToolsBin, "kubectl"), append([]string{"--kubeconfig", e.Cluster.Kubeconfig()}, args...)...)
	cmd.Dir = e.Cluster.RepoRoot
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// show runs kubectl and hands its output to Show.
func (e *Env) show(ctx context.Context, title string, args ...string) (string, error) {
	out, err := e.Kubectl(ctx, "", args...)
	if err != nil {
		return "", err
	}
	e.Show(title+"\n$ kubectl "+strings.Join(args, " "), out)
	return out, nil
}

// Manifest returns one of the embedded manifests with the cluster's values filled in.
func (e *Env) Manifest(name string) (string, error) {
	b, err := manifests.ReadFile("manifests/" + name)
	if err != nil {
		return "", err
	}
	s := strings.ReplaceAll(string(b), "LOCAL_PV_PATH", e.localPVPath())
	s = strings.ReplaceAll(s, "LEDGER_PV_PATH", e.ledgerPVPath())
	s = strings.ReplaceAll(s, "CRM_PV_PATH", e.crmPVPath())
	s = strings.ReplaceAll(s, "MINIO_DATA_DIR", filepath.Join(e.Cluster.StateDir, "minio-data"))
	if minio, err := filepath.EvalSymlinks(filepath.Join(e.Cluster.ToolsBin, "minio")); err == nil {
		s = strings.ReplaceAll(s, "MINIO_DIR", filepath.Dir(minio))
	}
	return strings.ReplaceAll(s, "NODE_NAME", cluster.NodeName), nil
}

// localPVPath is the local PV's directory, under the state directory so that
// teardown removes it.
func (e *Env) localPVPath() string {
	return filepath.Join(e.Cluster.StateDir, "local-volumes", "shop-db-0")
}

// ledgerPVPath is the local PV of the billing namespace's bare pod (more-apps.yaml).
func (e *Env) ledgerPVPath() string {
	return filepath.Join(e.Cluster.StateDir, "local-volumes", "billing-ledger")
}

// crmPVPath is the local PV of the contacts StatefulSet (crm.yaml), under the state
// directory: it goes with the cluster, as a node's disk goes with a lost cluster.
func (e *Env) crmPVPath() string {
	return filepath.Join(e.Cluster.StateDir, "local-volumes", "crm-contacts-0")
}

// Apply applies an embedded manifest with server-side apply.
func (e *Env) Apply(ctx context.Context, name string) error {
	m, err := e.Manifest(name)
	if err != nil {
		return err
	}
	_, err = e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-")
	return err
}

// Install installs Holdfast as a user does, `kubectl apply --server-side -k
// kustomize/local` (or e.Kustomization), and waits for the manager Deployment, the agent DaemonSet and the
// storage location "default" to be ready. The first apply cannot create the storage
// location before its CRD is established, so it is repeated until it succeeds.
func (e *Env) Install(ctx context.Context) error {
	dir := e.Kustomization
	if dir == "" {
		dir = "kustomize/local"
	}
	e.Log("installing Holdfast: kubectl apply --server-side -k %s", dir)
	var last error
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, last = e.Kubectl(ctx, "", "apply", "--server-side", "-k", dir)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("installing: %w (last: %v)", err, last)
	}
	e.Log("waiting for the manager Deployment and the agent DaemonSet")
	for _, what := range []string{"deployment/holdfast-manager", "daemonset/holdfast-agent"} {
		if _, err := e.Kubectl(ctx, "", "-n", "holdfast-system", "rollout", "status", what, "--timeout=3m"); err != nil {
			return e.withPodState(ctx, "holdfast-system", err)
		}
	}
	e.Log("waiting for the storage location to be Ready (the manager probes it)")
	if _, err := e.Kubectl(ctx, "", "wait", "--for=condition=Ready", "backupstoragelocation/default", "--timeout=2m"); err != nil {
		out, _ := e.Kubectl(ctx, "", "get", "bsl", "-o", "wide")
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

// withPodState adds the pods of ns and their recent events to err.
func (e *Env) withPodState(ctx context.Context, ns string, err error) error {
	pods, _ := e.Kubectl(ctx, "", "-n", ns, "get", "pods", "-o", "wide")
	events, _ := e.Kubectl(ctx, "", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
	return fmt.Errorf("%w\npods:\n%s\nevents:\n%s", err, pods, events)
}

// DeployApp deploys the sample application (manifests/app.yaml and cache.yaml) and
// waits for its pods.
func (e *Env) DeployApp(ctx context.Context) error {
	e.Log("deploying the sample application: a StatefulSet \"db\" on a local PV and a Deployment \"cache\" with an emptyDir")
	if err := os.MkdirAll(e.localPVPath(), 0o755); err != nil {
		return err
	}
	if err := e.Apply(ctx, "app.yaml"); err != nil {
		return err
	}
	if err := e.Apply(ctx, "cache.yaml"); err != nil {
		return err
	}
	for _, what := range []string{"statefulset/db", "deployment/cache"} {
		if _, err := e.Kubectl(ctx, "", "-n", AppNamespace, "rollout", "status", what, "--timeout=3m"); err != nil {
			return e.withPodState(ctx, AppNamespace, err)
		}
	}
	return nil
}

// Run is one finished run of the policy.
type Run struct {
	Policy  *backupv1alpha1.VolumeBackupPolicy
	Backups []backupv1alpha1.PodVolumeBackup
}

// Backup returns the run's backup of volume, or nil.
func (r *Run) Backup(volume string) *backupv1alpha1.PodVolumeBackup {
	for i := range r.Backups {
		if r.Backups[i].Spec.Volume == volume {
			return &r.Backups[i]
		}
	}
	return nil
}

// RunPolicy triggers the policy with the run-now annotation set to token, as a user
// or a GitOps commit does, and waits until that run finished.
func (e *Env) RunPolicy(ctx context.Context, token string) (*Run, error) {
	return e.RunPolicyNamed(ctx, PolicyName, token)
}

// RunPolicyNamed is RunPolicy for the policy name; a run that does not succeed is an
// error (with the run).
func (e *Env) RunPolicyNamed(ctx context.Context, name, token string) (*Run, error) {
	previous, err := e.StartRun(ctx, name, token)
	if err != nil {
		return nil, err
	}
	r, err := e.WaitRunEnded(ctx, name, token, previous)
	if err != nil {
		return nil, err
	}
	if r.Policy.Status.LastRun.Outcome != backupv1alpha1.RunOutcomeSucceeded {
		out, _ := e.Kubectl(ctx, "", "get", "pvb", "-A", "-o", "wide")
		return r, fmt.Errorf("run %s ended %s %s\n%s", r.Policy.Status.LastRun.Name, r.Policy.Status.LastRun.Outcome, r.Policy.Status.LastRun.Message, out)
	}
	return r, nil
}

// StartRun sets the policy's run-now annotation to token, as a user or a GitOps
// commit does, and returns the name of the run before it.
func (e *Env) StartRun(ctx context.Context, name, token string) (previous string, err error) {
	p := &backupv1alpha1.VolumeBackupPolicy{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		return "", err
	}
	if p.Status.LastRun != nil {
		previous = p.Status.LastRun.Name
	}
	e.Log("backing up now: kubectl annotate vbp %s %s=%s", name, backupv1alpha1.AnnotationRunNow, token)
	_, err = e.Kubectl(ctx, "", "annotate", "--overwrite", "vbp", name, backupv1alpha1.AnnotationRunNow+"="+token)
	return previous, err
}

// startedRun waits until the policy handled token and started a run after previous,
// and returns the policy once cond holds for it.
func (e *Env) startedRun(ctx context.Context, name, token, previous string, timeout time.Duration, cond func(*backupv1alpha1.VolumeBackupPolicy) (bool, string, error)) (*backupv1alpha1.VolumeBackupPolicy, error) {
	p := &backupv1alpha1.VolumeBackupPolicy{}
	var why string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
			why = err.Error()
			return false, nil
		}
		if p.Status.LastRunNowToken != token || p.Status.LastRun == nil || p.Status.LastRun.Name == previous {
			why = fmt.Sprintf("run-now token %q not handled yet", token)
			return false, nil
		}
		ok, w, err := cond(p)
		why = w
		return ok, err
	})
	if err != nil {
		out, _ := e.Kubectl(ctx, "", "get", "holdfast", "-A", "-o", "wide")
		return nil, fmt.Errorf("waiting for the run of %s: %w (%s)\n%s", name, err, why, out)
	}
	return p, nil
}

// WaitRunEnded waits until the run that token started has ended, whatever its outcome,
// and returns it with its backups.
func (e *Env) WaitRunEnded(ctx context.Context, name, token, previous string) (*Run, error) {
	p, err := e.startedRun(ctx, name, token, previous, 4*time.Minute, func(p *backupv1alpha1.VolumeBackupPolicy) (bool, string, error) {
		o := p.Status.LastRun.Outcome
		return o != "" && o != backupv1alpha1.RunOutcomeInProgress, fmt.Sprintf("run %s: outcome %s", p.Status.LastRun.Name, o), nil
	})
	if err != nil {
		return nil, err
	}
	backups, err := e.backupsOfRun(ctx, p.Status.LastRun.Name)
	if err != nil {
		return nil, err
	}
	r := &Run{Policy: p, Backups: backups}
	for _, b := range r.Backups {
		e.Log("  %s/%s/%s: %s, %d bytes uploaded, snapshot %s (parent %q) %s", b.Namespace, b.Spec.Pod.Name, b.Spec.Volume, b.Status.Phase, b.Status.BytesUploaded, b.Status.SnapshotID, b.Status.ParentSnapshotID, b.Status.Message)
	}
	return r, nil
}

// WaitBackupInProgress waits until a backup of the run that token started is
// InProgress (the agent is moving its data), and returns the run's name.
func (e *Env) WaitBackupInProgress(ctx context.Context, name, token, previous string) (string, error) {
	p, err := e.startedRun(ctx, name, token, previous, 2*time.Minute, func(p *backupv1alpha1.VolumeBackupPolicy) (bool, string, error) {
		backups, err := e.backupsOfRun(ctx, p.Status.LastRun.Name)
		if err != nil {
			return false, "", err
		}
		for _, b := range backups {
			if b.Status.Phase == backupv1alpha1.RunInProgress {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("no backup of run %s InProgress among %d", p.Status.LastRun.Name, len(backups)), nil
	})
	if err != nil {
		return "", err
	}
	return p.Status.LastRun.Name, nil
}

func (e *Env) backupsOfRun(ctx context.Context, run string) ([]backupv1alpha1.PodVolumeBackup, error) {
	list := &backupv1alpha1.PodVolumeBackupList{}
	if err := e.Client.List(ctx, list, client.MatchingLabels{backupv1alpha1.LabelRun: run}); err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return list.Items[i].Namespace+"/"+list.Items[i].Name < list.Items[j].Namespace+"/"+list.Items[j].Name
	})
	return list.Items, nil
}

// WaitBackupsGone waits until the manager expired backups: their objects are deleted,
// which their finalizer allows only once their snapshots are deleted from the
// repository. The error lists those left and the warnings of the namespace.
func (e *Env) WaitBackupsGone(ctx context.Context, backups []backupv1alpha1.PodVolumeBackup) error {
	var left []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		left = nil
		for _, b := range backups {
			pvb := &backupv1alpha1.PodVolumeBackup{}
			if err := e.Client.Get(ctx, client.ObjectKeyFromObject(&b), pvb); !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("%s (get: %v)", b.Name, err))
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		events, _ := e.Kubectl(ctx, "", "-n", AppNamespace, "get", "events", "--field-selector", "type=Warning")
		return fmt.Errorf("%w: left %v\n%s", err, left, events)
	}
	return nil
}

// ChangeDB is the change the stories make to the database between two backups: a
// new journal file next to its unchanged table.
const ChangeDB = "echo 'insert into orders values (42)' >> /var/lib/db/journal.log"

// Checksums returns `sha256sum` of the data files in the running pod of workload
// (deployment/cache or statefulset/db), read inside the pod.
func (e *Env) Checksums(ctx context.Context, workload, dir string) (string, error) {
	return e.ChecksumsIn(ctx, AppNamespace, workload, dir)
}

// ChecksumsIn is Checksums for a workload of namespace ns.
func (e *Env) ChecksumsIn(ctx context.Context, ns, workload, dir string) (string, error) {
	return e.Kubectl(ctx, "", "-n", ns, "exec", workload, "--", "sh", "-c", "cd "+dir+" && sha256sum *")
}

// WritePod runs a shell command in the running pod of workload.
func (e *Env) WritePod(ctx context.Context, workload, script string) error {
	_, err := e.Kubectl(ctx, "", "-n", AppNamespace, "exec", workload, "--", "sh", "-c", script)
	return err
}

// PodOf returns the one pod matching selector in the app namespace once it is Ready
// and not terminating.
func (e *Env) PodOf(ctx context.Context, selector map[string]string, timeout time.Duration) (*corev1.Pod, error) {
	return e.PodIn(ctx, AppNamespace, selector, timeout)
}

// PodIn is PodOf in namespace ns.
func (e *Env) PodIn(ctx context.Context, ns string, selector map[string]string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	var why string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := e.Client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels(selector)); err != nil {
			why = err.Error()
			return false, nil
		}
		var live []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != 1 {
			why = fmt.Sprintf("%d pods", len(live))
			return false, nil
		}
		pod = &live[0]
		why = fmt.Sprintf("pod %s: %s", pod.Name, pod.Status.Phase)
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, e.withPodState(ctx, ns, fmt.Errorf("pod %v: %w (%s)", selector, err, why))
	}
	return pod, nil
}

// Restored is what RestoreCache found.
type Restored struct {
	Pod     *corev1.Pod
	Restore *backupv1alpha1.VolumeRestore
	Log     string
}

// RestoreCache is the GitOps restore: the cache Deployment is deleted (its emptyDir
// goes with it), the VolumeRestore is applied, then the Deployment is recreated. Its
// new pod must wait in the restore-wait init container until the agent restored the
// volume, then start on the restored data.
func (e *Env) RestoreCache(ctx context.Context) (*Restored, error) {
	e.Log("damaging the data: deleting the cache Deployment, and its emptyDir with it")
	if _, err := e.Kubectl(ctx, "", "-n", AppNamespace, "delete", "deployment", "cache", "--wait=true"); err != nil {
		return nil, err
	}
	if _, err := e.Kubectl(ctx, "", "-n", AppNamespace, "wait", "--for=delete", "pod", "-l", "app=cache", "--timeout=2m"); err != nil {
		return nil, err
	}
	e.Log("restoring: applying VolumeRestore %s (latest backup of pods labelled app=cache), then recreating the Deployment", RestoreName)
	if err := e.Apply(ctx, "restore.yaml"); err != nil {
		return nil, err
	}
	if err := e.Apply(ctx, "cache.yaml"); err != nil {
		return nil, err
	}
	vr, err := e.WaitRestore(ctx, RestoreName)
	if err != nil {
		return nil, err
	}
	pod, err := e.PodOf(ctx, map[string]string{"app": "cache"}, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	logs, err := e.Kubectl(ctx, "", "-n", AppNamespace, "logs", pod.Name, "-c", "cache")
	if err != nil {
		return nil, err
	}
	return &Restored{Pod: pod, Restore: vr, Log: logs}, nil
}

// WaitRestore waits until the VolumeRestore name in the app namespace finished, and
// fails unless it Completed.
func (e *Env) WaitRestore(ctx context.Context, name string) (*backupv1alpha1.VolumeRestore, error) {
	return e.WaitRestoreIn(ctx, AppNamespace, name)
}

// WaitRestoreIn is WaitRestore in namespace ns.
func (e *Env) WaitRestoreIn(ctx context.Context, ns, name string) (*backupv1alpha1.VolumeRestore, error) {
	vr := &backupv1alpha1.VolumeRestore{}
	var why string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vr); err != nil {
			why = err.Error()
			return false, nil
		}
		why = fmt.Sprintf("phase %s", vr.Status.Phase)
		return vr.Status.Phase.IsFinal(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("VolumeRestore %s: %w (%s)", name, err, why)
	}
	if vr.Status.Phase != backupv1alpha1.RestoreCompleted {
		out, _ := e.Kubectl(ctx, "", "-n", ns, "describe", "vr", name)
		return nil, fmt.Errorf("VolumeRestore %s ended %s\n%s", name, vr.Status.Phase, out)
	}
	return vr, nil
}

// ShowState prints what a user looks at after a run.
func (e *Env) ShowState(ctx context.Context, backup string) error {
	if _, err := e.show(ctx, "Everything Holdfast knows, in one list (every kind is in the category holdfast):", "get", "holdfast", "-A"); err != nil {
		return err
	}
	if _, err := e.show(ctx, "The policy: what it selects, how its last run went, and its events:", "describe", "vbp", PolicyName); err != nil {
		return err
	}
	if backup != "" {
		if _, err := e.show(ctx, "One volume's backup: phase, bytes, snapshot and its parent:", "-n", AppNamespace, "describe", "pvb", backup); err != nil {
			return err
		}
	}
	return nil
}

// Teardown stops the cluster, removes the backups directory, and reports anything
// the cluster left on the host.
func Teardown(ctx context.Context, c *cluster.Cluster) error {
	var errs []error
	if err := c.Down(ctx); err != nil {
		errs = append(errs, fmt.Errorf("down: %w", err))
	}
	if err := RemoveBackupsDir(); err != nil {
		errs = append(errs, err)
	}
	for _, l := range c.Leftovers() {
		errs = append(errs, fmt.Errorf("left behind: %s", l))
	}
	return errors.Join(errs...)
}

// Diagnose returns what explains a failure: the Holdfast pods, the last lines of the
// manager's and the agent's logs, and every Holdfast object.
func (e *Env) Diagnose(ctx context.Context) string {
	var b strings.Builder
	for _, args := range [][]string{
		{"-n", "holdfast-system", "get", "pods", "-o", "wide"},
		{"-n", "holdfast-system", "logs", "deployment/holdfast-manager", "--tail=40"},
		{"-n", "holdfast-system", "logs", "daemonset/holdfast-agent", "--tail=40"},
		{"get", "holdfast", "-A", "-o", "wide"},
	} {
		out, err := e.Kubectl(ctx, "", args...)
		fmt.Fprintf(&b, "$ kubectl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// MinIO is the S3 store of the MinIO story, running as a pod.
type MinIO struct {
	// Endpoint is the Service's cluster IP and port, as pods reach it.
	Endpoint string
	// Client reaches the pod from the host, over the pod network's bridge.
	Client *miniogo.Client
}

// StartMinIO runs MinIO as a pod behind a Service (manifests/minio.yaml), with the
// credentials Secret in the operator namespace, and creates bucket.
func (e *Env) StartMinIO(ctx context.Context, bucket string) (*MinIO, error) {
	e.Log("starting MinIO as a pod behind a Service")
	if err := e.Apply(ctx, "minio.yaml"); err != nil {
		return nil, err
	}
	if _, err := e.Kubectl(ctx, "", "-n", "minio", "wait", "--for=condition=Ready", "pod/minio", "--timeout=2m"); err != nil {
		return nil, e.withPodState(ctx, "minio", err)
	}
	pod := &corev1.Pod{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "minio", Name: "minio"}, pod); err != nil {
		return nil, err
	}
	svc := &corev1.Service{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "minio", Name: "minio"}, svc); err != nil {
		return nil, err
	}
	mc, err := miniogo.New(pod.Status.PodIP+":9000", &miniogo.Options{
		Creds: credentials.NewStaticV4("holdfast-e2e", "holdfast-e2e-password", ""),
	})
	if err != nil {
		return nil, err
	}
	if err := mc.MakeBucket(ctx, bucket, miniogo.MakeBucketOptions{}); err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", bucket, err)
	}
	return &MinIO{Endpoint: svc.Spec.ClusterIP + ":9000", Client: mc}, nil
}

// MinIOLocation is the storage location MinIOLocation applies.
const MinIOLocation = "minio"

// ApplyMinIOLocation applies the storage location "minio" for m (bucket holdfast,
// prefix cluster-a) and waits for it to be Ready.
func (e *Env) ApplyMinIOLocation(ctx context.Context, m *MinIO) error {
	bsl := fmt.Sprintf(`apiVersion: backup.holdfast.dev/v1alpha1
kind: BackupStorageLocation
metadata:
  name: %s
spec:
  s3:
    bucket: holdfast
    prefix: cluster-a
    endpoint: %s
    region: us-east-1
    forcePathStyle: true
    insecure: true
    credentialsSecretRef:
      name: minio-credentials
`, MinIOLocation, m.Endpoint)
	if _, err := e.Kubectl(ctx, bsl, "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	if _, err := e.Kubectl(ctx, "", "wait", "--for=condition=Ready", "bsl/"+MinIOLocation, "--timeout=2m"); err != nil {
		out, _ := e.Kubectl(ctx, "", "get", "bsl", "-o", "wide")
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

// ApplyPolicy applies the sample policy (manifests/policy.yaml) with its backups
// going to the storage location location.
func (e *Env) ApplyPolicy(ctx context.Context, location string) error {
	m, err := e.Manifest("policy.yaml")
	if err != nil {
		return err
	}
	m = strings.Replace(m, "storageLocation: default", "storageLocation: "+location, 1)
	_, err = e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-")
	return err
}

// FreezeMinIO stops (SIGSTOP) the MinIO server process of the MinIO pod, on the host:
// connections stay open and requests hang, so a backup that reaches it stays
// InProgress until it is thawed or stopped (StopMinIO). The returned function thaws
// it (for cleanups too; harmless when the process is gone).
func (e *Env) FreezeMinIO() (thaw func(), err error) {
	pids, err := minioPIDs()
	if err != nil {
		return func() {}, err
	}
	e.Log("freezing MinIO (SIGSTOP to pid %v): requests to it hang", pids)
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return func() {}, err
		}
	}
	return func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}, nil
}

// minioPIDs finds the processes of the MinIO pod's server (manifests/minio.yaml) by
// their command line.
func minioPIDs() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) >= 3 && args[0] == "/opt/minio/minio" && args[1] == "server" && args[2] == "/data" {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, errors.New("no MinIO server process (/opt/minio/minio server /data) on the host")
	}
	return pids, nil
}

// StopMinIO deletes the MinIO pod: the store is gone until StartMinIOAgain.
func (e *Env) StopMinIO(ctx context.Context) error {
	e.Log("stopping MinIO: kubectl -n minio delete pod minio")
	_, err := e.Kubectl(ctx, "", "-n", "minio", "delete", "pod", "minio", "--wait=true")
	return err
}

// StartMinIOAgain recreates the MinIO pod on the same data and waits until it is
// ready and the storage location named location is Ready again.
func (e *Env) StartMinIOAgain(ctx context.Context, location string) error {
	e.Log("starting MinIO again on the same data")
	if err := e.Apply(ctx, "minio.yaml"); err != nil {
		return err
	}
	if _, err := e.Kubectl(ctx, "", "-n", "minio", "wait", "--for=condition=Ready", "pod/minio", "--timeout=2m"); err != nil {
		return e.withPodState(ctx, "minio", err)
	}
	return e.WaitLocationReady(ctx, location)
}

// WaitLocationReady waits until the storage location is Ready (the manager re-probes
// a failing location with a back-off of at most 5 minutes; one that failed a few
// seconds ago is probed again within a minute).
func (e *Env) WaitLocationReady(ctx context.Context, location string) error {
	if _, err := e.Kubectl(ctx, "", "wait", "--for=condition=Ready", "bsl/"+location, "--timeout=3m"); err != nil {
		out, _ := e.Kubectl(ctx, "", "get", "bsl", "-o", "wide")
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

// RestartAgent deletes the agent pod, as a node drain or an upgrade does, calls gone
// once it is gone, and waits until the DaemonSet's new pod is ready.
func (e *Env) RestartAgent(ctx context.Context, gone func()) error {
	e.Log("deleting the agent pod: kubectl -n holdfast-system delete pod -l app.kubernetes.io/component=agent")
	if _, err := e.Kubectl(ctx, "", "-n", "holdfast-system", "delete", "pod", "-l", "app.kubernetes.io/component=agent", "--wait=true"); err != nil {
		return err
	}
	gone()
	if _, err := e.Kubectl(ctx, "", "-n", "holdfast-system", "rollout", "status", "daemonset/holdfast-agent", "--timeout=3m"); err != nil {
		return e.withPodState(ctx, "holdfast-system", err)
	}
	return nil
}

// AllToMinIOPolicy backs up, to the MinIO location, the claims of the storage class
// "fast" and the emptyDirs of pods labelled backup=true, in every namespace.
const AllToMinIOPolicy = `apiVersion: backup.holdfast.dev/v1alpha1
kind: VolumeBackupPolicy
metadata:
  name: all-to-minio
spec:
  selector:
    volumes: |
      (pvc != null && pvc.spec.storageClassName == "fast") ||
      (has(volume.emptyDir) && pod.metadata.labels[?"backup"].orValue("") == "true")
  storageLocation: minio
`

// DeployMoreApps deploys the namespaces billing and audit with their bare pods
// (manifests/more-apps.yaml) and waits for the pods.
func (e *Env) DeployMoreApps(ctx context.Context) error {
	e.Log("deploying bare pods in the namespaces billing and audit")
	if err := os.MkdirAll(e.ledgerPVPath(), 0o755); err != nil {
		return err
	}
	if err := e.Apply(ctx, "more-apps.yaml"); err != nil {
		return err
	}
	for _, p := range []string{"billing/ledger", "audit/collector", "audit/scratchpad"} {
		ns, name, _ := strings.Cut(p, "/")
		if _, err := e.Kubectl(ctx, "", "-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=3m"); err != nil {
			return e.withPodState(ctx, ns, err)
		}
	}
	return nil
}

// WaitBackupFinished waits until the backup b is Completed, Failed or Canceled.
func (e *Env) WaitBackupFinished(ctx context.Context, b *backupv1alpha1.PodVolumeBackup) (*backupv1alpha1.PodVolumeBackup, error) {
	got := &backupv1alpha1.PodVolumeBackup{}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(b), got); err != nil {
			return false, nil
		}
		switch got.Status.Phase {
		case backupv1alpha1.RunCompleted, backupv1alpha1.RunFailed, backupv1alpha1.RunCanceled:
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for %s/%s to finish (%s %q): %w", b.Namespace, b.Name, got.Status.Phase, got.Status.Message, err)
	}
	return got, nil
}
