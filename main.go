// Command holdfast is the one Holdfast binary. Its subcommands are the manager (policy,
// storage, repository and restore controllers, webhooks), the node agent (moves data
// for the pod volumes of its node) and restore-wait (the init container that holds an
// application until its volumes are restored).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	// Policies name IANA time zones (spec.schedule.timeZone) and the image has no
	// zoneinfo files: the binary carries its own (about 450 KB).
	_ "time/tzdata"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/holdfast-dev/holdfast/agent"
	"github.com/holdfast-dev/holdfast/agent/mover"
	"github.com/holdfast-dev/holdfast/agent/restorewait"
	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/cli"
	"github.com/holdfast-dev/holdfast/controllers/browse"
	"github.com/holdfast-dev/holdfast/controllers/coverage"
	"github.com/holdfast-dev/holdfast/controllers/hooks"
	"github.com/holdfast-dev/holdfast/controllers/monitoring"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/controllers/stranded"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
	"github.com/holdfast-dev/holdfast/internal/recovery"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/internal/webhookcert"
)

const usage = `holdfast backs up and restores the files inside Kubernetes pod volumes.

Usage:
  holdfast <command> [flags]

Commands:
  manager        run the controllers and webhooks (one Deployment per cluster)
  agent          run the node agent (one DaemonSet pod per node)
  restore-wait   wait until a pod's volumes are restored (init container)
  pause          sleep until SIGTERM (the reader pod that backs up a claim no pod uses)
  browse-relay   serve a browse session's snapshot on loopback (its relay pod)
  recover        without a cluster: list a store's repositories and restore points, and
                 recover a repository's key for the kopia or restic CLI (docs/recover.md)
  kubectl        the kubectl plugin (also run as kubectl-holdfast): preview, coverage,
                 run, restore, snapshots, ls, get (docs/cli.md)

Run "holdfast <command> --help" for the flags of a command.
`

func main() {
	// Linked or copied as kubectl-holdfast on PATH, the binary is the kubectl plugin.
	if filepath.Base(os.Args[0]) == cli.PluginName {
		os.Exit(cli.Main("kubectl holdfast", os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	commands := map[string]func([]string, io.Writer) error{
		"manager":                  runManager,
		"agent":                    runAgent,
		restorewait.Subcommand:     runRestoreWait,
		policyctrl.PauseSubcommand: runPause,
		"agent-mover":              runAgentMover,
		browse.RelaySubcommand:     runBrowseRelay,
		"recover":                  func(args []string, stderr io.Writer) error { return recovery.Main(args, stdout, stderr) },
	}
	if args[0] == "kubectl" {
		return cli.Main("holdfast kubectl", args[1:], stdout, stderr)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "holdfast: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	// Files in filesystem storage locations are shared with a group (see
	// internal/repository/filesystem.go); every file Holdfast writes elsewhere
	// (restored files, markers, certificates) gets an explicit mode.
	syscall.Umask(repository.ProcessUmask)
	if err := cmd(args[1:], stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "holdfast %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// commonFlags are the flags every long-running subcommand has.
type commonFlags struct {
	kubeconfig     string
	metricsAddr    string
	metricsCertDir string
	probeAddr      string
	zap            zap.Options
}

func (c *commonFlags) bind(fs *flag.FlagSet, metricsAddr, probeAddr string) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "",
		"path to a kubeconfig; empty uses the in-cluster config or $KUBECONFIG")
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", metricsAddr,
		"address the Prometheus metrics endpoint listens on (HTTPS; a client needs a token allowed to get /metrics); 0 disables it")
	fs.StringVar(&c.metricsCertDir, "metrics-cert-dir", "",
		"directory with the metrics serving certificate (tls.crt, tls.key), reloaded when they change; without them a self-signed certificate is made at start")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", probeAddr,
		"address the /healthz and /readyz probes listen on")
	c.zap.BindFlags(fs)
}

// metricsOptions serves the metrics endpoint over HTTPS to clients the API server
// vouches for: the bearer token is checked with a TokenReview, and the request with a
// SubjectAccessReview for get on the non-resource URL /metrics (ClusterRole
// holdfast-metrics-reader grants it). No token gets 401, a token without the grant 403.
// HTTP/2 is not offered: its stream resets (CVE-2023-44487) cost a server more than the
// client, and a scrape gains nothing from it.
func metricsOptions(bindAddress, certDir string) metricsserver.Options {
	return metricsserver.Options{
		BindAddress:    bindAddress,
		SecureServing:  true,
		CertDir:        certDir,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
		TLSOpts:        []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
}

// restConfig loads the client config from --kubeconfig or, without it, as
// controller-runtime does (in-cluster, $KUBECONFIG, ~/.kube/config). Both paths leave
// client-side rate limiting off, as ctrl.GetConfig does, and let the API server's
// priority and fairness decide: client-go turns an unset QPS into 5 requests a second
// with a burst of 10, which would make a run of 10,000 PodVolumeBackups take over half
// an hour when the manager runs out of cluster.
func (c *commonFlags) restConfig() (*rest.Config, error) {
	if c.kubeconfig == "" {
		return ctrl.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return nil, err
	}
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("holdfast "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: holdfast %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(backupv1alpha1.AddToScheme(scheme))
	return scheme
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func defaultOperatorNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "holdfast-system"
}

func runManager(args []string, stderr io.Writer) error {
	fs := newFlagSet("manager", "Runs the Holdfast controllers and webhooks. One replica is active at a time\nwhen leader election is on.", stderr)
	var common commonFlags
	common.bind(fs, ":8080", ":8081")
	leaderElect := fs.Bool("leader-elect", false,
		"elect a leader so that only one manager replica reconciles at a time")
	namespace := fs.String("namespace", defaultOperatorNamespace(),
		"operator namespace: holds the credentials and repository key Secrets (default from $POD_NAMESPACE)")
	webhookPort := fs.Int("webhook-port", 9443, "port the admission webhooks listen on")
	webhookCertDir := fs.String("webhook-cert-dir", "",
		"directory with the webhook serving certificate (tls.crt, tls.key); empty uses a temporary directory")
	webhookCertMode := fs.String("webhook-cert-mode", webhookcert.ModeSelfSigned,
		"self-signed: the manager issues and rotates its webhook certificate (Secret "+webhookcert.DefaultSecretName+") and sets the webhooks' caBundle; "+
			"external: cert-manager (or you) provides tls.crt and tls.key in --webhook-cert-dir and the caBundle")
	restoreHelperImage := fs.String("restore-helper-image", envOr("HOLDFAST_IMAGE", "holdfast:dev"),
		"image of the restore-wait init container and of the reader pods that back up claims no pod uses (its entrypoint must be holdfast) unless ConfigMap holdfast-restore-helper names one; default from $HOLDFAST_IMAGE")
	repoWorkDir := fs.String("repository-work-dir", filepath.Join(os.TempDir(), "holdfast-manager"),
		"private directory (mode 0700, memory-backed in the pod) for repository config files and bounded caches")
	resticPathManager := fs.String("restic-path", "restic", "the restic binary, for restic repositories")
	maxMaintenance := fs.Int("max-concurrent-maintenance", 2, "repository maintenance passes that may run at once")
	snapshotDeleteTimeout := fs.Duration("snapshot-delete-timeout", storage.DefaultSnapshotDeleteTimeout,
		"how long a deleted PodVolumeBackup waits for its snapshot to be deleted before it goes and leaves the snapshot in the store (event SnapshotKept)")
	finishedTTL := fs.Duration("finished-ttl", storage.DefaultFinishedTTL,
		"how long Failed/Canceled PodVolumeBackups (but the newest of each source) and ended PodVolumeRestores stay")
	agentServiceAccount := fs.String("agent-service-account", "holdfast-agent",
		"ServiceAccount of the node agents in the operator namespace: only its node-bound tokens get a job's repository key")
	strandedDeadline := fs.Duration("stranded-work-deadline", stranded.DefaultDeadline,
		"how long a PodVolumeBackup or PodVolumeRestore may wait for an agent that cannot come (its node is gone, is not Linux, or runs no Holdfast agent) before the manager fails it")
	var hostPathRoots hostpath.Roots
	fs.Var(&hostPathRoots, "host-path-roots", hostPathRootsUsage+"; a claim on a hostPath PersistentVolume elsewhere is skipped (reason HostPath). Give the agents the same list")
	managerService := fs.String("service", "holdfast-webhook-service",
		"the manager's webhook Service in the operator namespace, through which agents and browse relay pods reach it")
	managerWebhookConfiguration := fs.String("webhook-configuration", "holdfast-mutating-webhook-configuration",
		"the MutatingWebhookConfiguration whose caBundle signs the manager's serving certificate (handed to browse relay pods)")
	coverageInterval := fs.Duration("coverage-interval", coverage.DefaultInterval,
		"the shortest time between two computations of the cluster's coverage (VolumeCoverage cluster, holdfast_unprotected_* metrics); changes within it are folded into the next")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *coverageInterval <= 0 {
		return fmt.Errorf("--coverage-interval must be positive, not %s", *coverageInterval)
	}
	if *strandedDeadline <= 0 {
		return fmt.Errorf("--stranded-work-deadline must be positive, not %s", *strandedDeadline)
	}
	if *webhookCertMode != webhookcert.ModeSelfSigned && *webhookCertMode != webhookcert.ModeExternal {
		return fmt.Errorf("--webhook-cert-mode must be %s or %s, not %q", webhookcert.ModeSelfSigned, webhookcert.ModeExternal, *webhookCertMode)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&common.zap)))

	cfg, err := common.restConfig()
	if err != nil {
		return fmt.Errorf("loading the Kubernetes client config: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  newScheme(),
		Metrics:                 metricsOptions(common.metricsAddr, common.metricsCertDir),
		HealthProbeBindAddress:  common.probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "manager.holdfast.dev",
		LeaderElectionNamespace: *namespace,
		WebhookServer:           webhook.NewServer(webhook.Options{Port: *webhookPort, CertDir: *webhookCertDir}),
		Cache:                   policyctrl.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if *webhookCertMode == webhookcert.ModeSelfSigned {
		if _, err := webhookcert.AddToManager(mgr, webhookcert.Options{Namespace: *namespace, CertDir: *webhookCertDir}); err != nil {
			return err
		}
	}
	catalog, err := storage.Setup(mgr, storage.Options{Namespace: *namespace, WorkDir: *repoWorkDir, ResticPath: *resticPathManager, MaxConcurrentMaintenance: *maxMaintenance,
		SnapshotDeleteTimeout: *snapshotDeleteTimeout, FinishedTTL: *finishedTTL})
	if err != nil {
		return err
	}
	if err := (&restore.VolumeRestoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Catalog: catalog,
		Writer: restore.ClaimPodOptions{Namespace: *namespace, Image: *restoreHelperImage}}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the restore controller: %w", err)
	}
	if err := (&restore.HeldPodReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the held-pod controller: %w", err)
	}
	(&restore.PodWebhook{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: *namespace, Image: *restoreHelperImage}).SetupWithManager(mgr)
	storage.SetupJobCredentials(mgr, *namespace, *agentServiceAccount)
	if err := browse.Setup(mgr, browse.Options{Catalog: catalog,
		Relay: restore.ClaimPodOptions{Namespace: *namespace, Image: *restoreHelperImage},
		Endpoint: browse.ServiceEndpoint{Reader: mgr.GetAPIReader(), Namespace: *namespace,
			Service: *managerService, WebhookConfiguration: *managerWebhookConfiguration}}); err != nil {
		return err
	}
	engine, err := policyctrl.Setup(mgr, policyctrl.Options{HostPathRoots: hostPathRoots,
		Reader: restore.ClaimPodOptions{Namespace: *namespace, Image: *restoreHelperImage}})
	if err != nil {
		return err
	}
	if err := coverage.Setup(mgr, coverage.Options{Interval: *coverageInterval, Namespace: *namespace, Engine: engine, HostPathRoots: hostPathRoots}); err != nil {
		return err
	}
	if err := stranded.Setup(mgr, stranded.Options{Namespace: *namespace, Deadline: *strandedDeadline}); err != nil {
		return fmt.Errorf("setting up the stranded work guard: %w", err)
	}
	// Backup hooks run from the manager, never the agent (docs/security.md).
	hookExec, err := hooks.NewRemoteExecutor(cfg)
	if err != nil {
		return err
	}
	if err := (&hooks.HookReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Executor: hookExec,
		Recorder: mgr.GetEventRecorder("holdfast-hooks")}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the hook controller: %w", err)
	}
	// Holdfast's state metrics (docs/monitoring.md), on the metrics endpoint above.
	if _, err := monitoring.Setup(mgr, monitoring.Options{Namespace: *namespace}); err != nil {
		return err
	}
	if err := addProbes(mgr); err != nil {
		return err
	}
	ctrl.Log.WithName("manager").Info("starting", "namespace", *namespace, "leaderElection", *leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}

func runAgent(args []string, stderr io.Writer) error {
	fs := newFlagSet("agent", "Runs the node agent: backs up and restores the pod volumes of one node.", stderr)
	var common commonFlags
	common.bind(fs, ":8090", ":8091")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"),
		"the node this agent serves (default from $NODE_NAME, set from the downward API spec.nodeName)")
	kubeletRoot := fs.String("kubelet-root", "/var/lib/kubelet",
		"the kubelet's root directory as seen by the agent; platforms move it (TKGI: /var/vcap/data/kubelet, RancherOS: /opt/rke/var/lib/kubelet)")
	namespace := fs.String("namespace", defaultOperatorNamespace(),
		"operator namespace: holds the repository key Secrets (default from $POD_NAMESPACE)")
	var hostPathRoots hostpath.Roots
	fs.Var(&hostPathRoots, "host-path-roots", hostPathRootsUsage+"; mount each into the agent read-write, at its own path or under --host-filesystem. Give the manager the same list")
	hostFilesystem := fs.String("host-filesystem", "",
		"where the node's filesystem, or the directories holding the --host-path-roots, is mounted in the agent (e.g. /host: root R is read at /host/R, links resolved as on the node); empty: each root is mounted at its own path")
	concurrency := fs.Int("concurrency", 1, "volumes backed up or restored at once on this node")
	workDir := fs.String("work-dir", filepath.Join(os.TempDir(), "holdfast-agent"),
		"private directory for each job's repository config and credentials (mount a memory-backed volume here)")
	cacheDir := fs.String("cache-dir", filepath.Join(os.TempDir(), "holdfast-cache"),
		"where backups keep each repository's kopia or restic cache between jobs, and restores their cache while they run (encrypted data only; a disk-backed volume)")
	cacheSize := fs.String("cache-size", "1Gi", "the budget of the caches backups keep; the least recently used are removed beyond it")
	resticPath := fs.String("restic-path", "restic", "the restic binary")
	progressInterval := fs.Duration("progress-interval", 5*time.Second, "how often a running backup or restore updates its status")
	var manager agent.ManagerOptions
	fs.StringVar(&manager.Service, "manager-service", "holdfast-webhook-service",
		"the manager's webhook Service in the operator namespace, through which the agent asks for each job's repository key")
	fs.StringVar(&manager.WebhookConfiguration, "manager-webhook-configuration", "holdfast-mutating-webhook-configuration",
		"the MutatingWebhookConfiguration whose caBundle signs the manager's serving certificate")
	fs.StringVar(&manager.URL, "manager-url", "", "reach the manager at this https URL instead of through --manager-service")
	fs.StringVar(&manager.TokenFile, "manager-token-file", "/var/run/secrets/holdfast/manager-token/token",
		"the agent's projected ServiceAccount token for the manager (audience "+jobcredentials.Audience+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodeName == "" {
		return errors.New("--node-name is required (or set $NODE_NAME from the downward API)")
	}
	cacheBytes, err := resource.ParseQuantity(*cacheSize)
	if err != nil || cacheBytes.Value() <= 0 {
		return fmt.Errorf("--cache-size %q is not a positive quantity such as 1Gi or 500Mi", *cacheSize)
	}
	if st, err := os.Stat(*kubeletRoot); err != nil || !st.IsDir() {
		return fmt.Errorf("--kubelet-root %s is not a readable directory: mount the kubelet root into the agent", *kubeletRoot)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&common.zap)))

	cfg, err := common.restConfig()
	if err != nil {
		return fmt.Errorf("loading the Kubernetes client config: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 newScheme(),
		Metrics:                metricsOptions(common.metricsAddr, common.metricsCertDir),
		HealthProbeBindAddress: common.probeAddr,
		Cache:                  agent.CacheOptions(*nodeName),
	})
	if err != nil {
		return fmt.Errorf("creating the agent: %w", err)
	}
	if err := agent.SetupWithManager(mgr, agent.Options{
		NodeName: *nodeName, KubeletRoot: *kubeletRoot, HostPathRoots: hostPathRoots, HostFilesystem: *hostFilesystem, Namespace: *namespace, Concurrency: *concurrency,
		WorkDir: *workDir, CacheDir: *cacheDir, CacheSizeBytes: cacheBytes.Value(),
		ResticPath: *resticPath, ProgressInterval: *progressInterval, Manager: manager,
	}); err != nil {
		return err
	}
	if err := addProbes(mgr); err != nil {
		return err
	}
	ctrl.Log.WithName("agent").Info("starting", "node", *nodeName, "kubeletRoot", *kubeletRoot, "hostPathRoots", hostPathRoots.String(), "namespace", *namespace)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// runAgentMover is the agent's child process for one volume (see agent/mover); it is
// not meant to be run by hand.
func runAgentMover(args []string, stderr io.Writer) error {
	fs := newFlagSet("agent-mover", "Moves one volume's data for the agent: reads a job on stdin, reports on stdout.", stderr)
	interval := fs.Duration("progress-interval", time.Second, "how often progress is reported to the agent")
	confined := fs.Bool("confined", false, "the second stage, already inside the job's jail (the first stage starts it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*confined {
		return mover.Confine(os.Stdin, os.Stdout, []string{"holdfast", "agent-mover", "--confined", "--progress-interval", interval.String()})
	}
	// What the repository code logs (a restore falling back to kopia's cache, a fatal
	// kopia error) goes to stderr, whose lines the agent puts in its own log.
	ctrl.SetLogger(zap.New(zap.WriteTo(stderr), zap.ConsoleEncoder()))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return mover.Serve(ctx, os.Stdin, os.Stdout, mover.Execute, *interval)
}

func addProbes(mgr ctrl.Manager) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	return nil
}

// runPause sleeps until SIGTERM or an interrupt: a reader pod only holds its claim
// mounted while the agent of its node reads it.
func runPause(args []string, stderr io.Writer) error {
	fs := newFlagSet(policyctrl.PauseSubcommand, "Sleeps until SIGTERM, then exits 0. Runs in the reader pods that hold a claim no\npod uses mounted while the node agent backs it up.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	// Said only once SIGTERM is caught: from here on it ends the pause with exit 0
	// rather than killing the process (what a test waits for; a line in the pod's log).
	fmt.Fprintln(stderr, pauseReadyLine)
	fmt.Fprintf(stderr, "holdfast pause: %s, exiting\n", <-signals)
	return nil
}

// runBrowseRelay serves a browse session in its relay pod (controllers/browse).
func runBrowseRelay(args []string, stderr io.Writer) error {
	fs := newFlagSet(browse.RelaySubcommand, "Serves a browse session's snapshot on a loopback address, passing each request\n"+
		"on to the manager with the pod's projected token. Runs in the relay pods of BrowseSessions.", stderr)
	var relay browse.Relay
	fs.StringVar(&relay.ManagerURL, strings.TrimPrefix(browse.FlagManagerURL, "--"), "", "https URL of the manager")
	fs.StringVar(&relay.ServerName, strings.TrimPrefix(browse.FlagServerName, "--"), "", "name in the manager's serving certificate")
	fs.StringVar(&relay.TokenFile, strings.TrimPrefix(browse.FlagTokenFile, "--"), "", "the pod's projected token for audience "+browse.TokenAudience)
	listen := fs.String(strings.TrimPrefix(browse.FlagListen, "--"), "127.0.0.1:8765", "address to serve on (keep it on loopback: kubectl port-forward reaches it, other pods do not)")
	health := fs.String(strings.TrimPrefix(browse.FlagHealth, "--"), "", "address answering GET /healthz once the relay listens (the readiness probe); empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	relay.CA = []byte(os.Getenv(browse.EnvManagerCA))
	handler, err := relay.Handler()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	servers := []*http.Server{srv}
	if *health != "" {
		// Bound after the relay's own listener: a probe that answers means it listens.
		hl, err := net.Listen("tcp", *health)
		if err != nil {
			return err
		}
		hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintln(w, "ok")
		})}
		servers = append(servers, hs)
		go func() { _ = hs.Serve(hl) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(shutdown)
		}
	}()
	fmt.Fprintf(stderr, "holdfast %s: serving on %s for %s\n", browse.RelaySubcommand, ln.Addr(), relay.ManagerURL)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// pauseReadyLine is what holdfast pause writes to stderr once SIGTERM ends it cleanly.
const pauseReadyLine = "holdfast pause: holding the claim until SIGTERM"

func runRestoreWait(args []string, stderr io.Writer) error {
	fs := newFlagSet(restorewait.Subcommand,
		"Waits until the agent has written the done-marker <restore-uid>.<volume> of every listed\n"+
			"volume into --marker-dir, then exits 0; it opens none of the volumes. Without --marker-dir\n"+
			"(a pod admitted before the marker volume) it waits for .holdfast/<restore-uid>.<pod-uid>\n"+
			"(pod UID from $"+restorewait.EnvPodUID+"; .holdfast/<restore-uid> without it) in each volume\n"+
			"and removes it. Runs as an init container.", stderr)
	var volumes stringList
	fs.Var(&volumes, restorewait.FlagVolume, "mount path of a volume being restored (repeatable)")
	restoreUID := fs.String(restorewait.FlagRestoreUID, "", "UID of the VolumeRestore whose markers to wait for")
	markerDir := fs.String(restorewait.FlagMarkerDir, "", "directory of the pod's marker volume, where the agent writes the markers")
	interval := fs.Duration("poll-interval", time.Second, "how often to look for the markers")
	deadline := fs.Duration(restorewait.FlagDeadline, 0, "give up, exiting non-zero with the reason, after this long (0: wait without a limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return restorewait.Wait(ctx, restorewait.Options{
		Volumes:    volumes,
		MarkerDir:  *markerDir,
		RestoreUID: *restoreUID,
		PodUID:     os.Getenv(restorewait.EnvPodUID),
		Interval:   *interval,
		Deadline:   *deadline,
		Log:        stderr,
	})
}

// hostPathRootsUsage starts the help of --host-path-roots, which the manager and the
// agents must be given alike.
const hostPathRootsUsage = "comma-separated absolute host directories (e.g. /var/lib/rancher/k3s/storage,/opt/local-path-provisioner) under which " +
	"the directories of hostPath PersistentVolumes (local-path provisioners) are backed up and restored; repeatable; none by default"

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return fmt.Sprint([]string(*s)) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
