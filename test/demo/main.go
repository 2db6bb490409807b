// Command demo is `make demo`: it brings up the local cluster (test/cluster), installs
// Holdfast with `kubectl apply -k kustomize/local`, deploys a sample application,
// backs it up with a policy, damages it, restores it through a VolumeRestore and
// checks the data; then deletes a whole namespace and restores it from what the store
// holds, saying what each step shows. The steps are the e2e stories' (package
// test/e2e). With -keep the cluster stays up for exploring with kubectl.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-dev/holdfast/test/cluster"
	"github.com/holdfast-dev/holdfast/test/e2e"
)

func main() {
	keep := flag.Bool("keep", false, "leave the cluster up at the end and print its kubeconfig")
	storage := flag.String("storage", "filesystem", "where the backups go: filesystem (the local overlay's default location) or minio (MinIO as a pod)")
	flag.Parse()
	if *storage != "filesystem" && *storage != "minio" {
		fmt.Fprintf(os.Stderr, "-storage must be filesystem or minio, not %q\n", *storage)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *keep, *storage); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

var start = time.Now()

func step(format string, args ...any) {
	fmt.Printf("\n==> [%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func say(format string, args ...any) {
	fmt.Printf("    %s\n", fmt.Sprintf(format, args...))
}

func show(title, out string) {
	fmt.Printf("\n%s\n", title)
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Printf("    %s\n", l)
	}
}

func run(ctx context.Context, keep bool, storage string) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo runs a real Kubernetes node on this machine and needs root (mounts, network namespaces, cgroups)")
	}
	c := cluster.New("")
	unlock, err := cluster.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if st := c.Status(ctx); len(st.Components) > 0 {
		return fmt.Errorf("a local cluster is already up in %s (%s); `make cluster-down` first", c.StateDir, st.Detail)
	}
	if _, err := os.Stat(c.KubeletRoot); err == nil {
		return fmt.Errorf("%s exists: a kubelet runs or ran here; the demo needs a machine without one", c.KubeletRoot)
	}

	step("Starting a single-node Kubernetes cluster on 127.0.0.1 (etcd, API server, controllers, kubelet, containerd), state in %s", c.StateDir)
	if err := e2e.PrepareBackupsDir(say); err != nil {
		return err
	}
	defer func() {
		if keep && err == nil {
			return
		}
		step("Tearing the cluster down (every process, mount, network device and file it made)")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if derr := e2e.Teardown(ctx, c); derr != nil {
			err = fmt.Errorf("%v; teardown: %w", err, derr)
			return
		}
		say("done: nothing left behind")
	}()
	c.Log = func(format string, args ...any) { say(format, args...) }
	if err := c.Up(ctx); err != nil {
		return err
	}
	c.Log = nil
	e, err := e2e.NewEnv(c, say, show)
	if err != nil {
		return err
	}

	step("Installing Holdfast the way a user does: kubectl apply --server-side -k kustomize/local")
	say("the manager runs as a Deployment, the agent as a DaemonSet reading the kubelet's pods directory;")
	say("backups go to the filesystem storage location \"default\" (%s on this machine)", e2e.BackupsDir)
	if err := e.Install(ctx); err != nil {
		return err
	}
	out, err := e.Kubectl(ctx, "", "get", "pods,bsl", "-n", "holdfast-system")
	if err != nil {
		return err
	}
	show("Holdfast is running, and its storage location is Ready (the manager wrote and read back a probe):", out)

	step("Deploying a sample application in namespace %q: a claim-backed database and an emptyDir cache", e2e.AppNamespace)
	if err := e.DeployApp(ctx); err != nil {
		return err
	}
	dbSums, err := e.Checksums(ctx, "statefulset/db", "/var/lib/db")
	if err != nil {
		return err
	}
	cacheSums, err := e.Checksums(ctx, "deployment/cache", "/cache")
	if err != nil {
		return err
	}
	show("The data the application wrote (sha256sum inside its pods):", "db-0 (claim data-db-0):\n"+dbSums+"cache (emptyDir):\n"+cacheSums)

	location := "default"
	if storage == "minio" {
		step("Starting MinIO as a pod behind a Service and adding the S3 storage location %q (STORAGE=minio)", e2e.MinIOLocation)
		mc, err := e.StartMinIO(ctx, "holdfast")
		if err != nil {
			return err
		}
		if err := e.ApplyMinIOLocation(ctx, mc); err != nil {
			return err
		}
		out, _ := e.Kubectl(ctx, "", "get", "bsl")
		show("Both storage locations are Ready:", out)
		location = e2e.MinIOLocation
	}

	step("Applying a VolumeBackupPolicy: claims of storage class \"fast\" and emptyDirs of pods labelled backup=true")
	m, _ := e.Manifest("policy.yaml")
	show("The policy (a CEL selector, as it would sit in Git):", strings.Replace(m, "storageLocation: default", "storageLocation: "+location, 1))
	if err := e.ApplyPolicy(ctx, location); err != nil {
		return err
	}
	step("Backing up now with the run-now annotation (a GitOps commit can set it too)")
	run, err := e.RunPolicy(ctx, "demo-1")
	if err != nil {
		return err
	}
	backup := run.Backup("data")
	name := ""
	if backup != nil {
		name = backup.Name
	}
	if err := e.ShowState(ctx, name); err != nil {
		return err
	}

	step("Writing a journal file into the database and backing up again: only the change is uploaded")
	if err := e.WritePod(ctx, "statefulset/db", e2e.ChangeDB); err != nil {
		return err
	}
	run, err = e.RunPolicy(ctx, "demo-2")
	if err != nil {
		return err
	}
	out, _ = e.Kubectl(ctx, "", "-n", e2e.AppNamespace, "get", "pvb", "-o", "wide")
	show("Every backup with its uploaded bytes: the second run sent a fraction of the first:", out)
	if cacheSums, err = e.Checksums(ctx, "deployment/cache", "/cache"); err != nil {
		return err
	}

	step("Restoring the cache: its Deployment is deleted, a VolumeRestore is applied, the Deployment is recreated")
	m, _ = e.Manifest("restore.yaml")
	show("The VolumeRestore:", m)
	restored, err := e.RestoreCache(ctx)
	if err != nil {
		return err
	}
	var inits []string
	for _, ic := range restored.Pod.Spec.InitContainers {
		inits = append(inits, ic.Name)
	}
	say("the new pod %s got the init container(s) %s from Holdfast's webhook: it waited until its volume was restored", restored.Pod.Name, strings.Join(inits, ", "))
	show("The application's log: it started on the restored data:", restored.Log)
	out, _ = e.Kubectl(ctx, "", "-n", e2e.AppNamespace, "get", "vr,pvr")
	show("The restore and its per-volume restore:", out)

	step("Verifying the restored data")
	got, err := e.Checksums(ctx, "deployment/cache", "/cache")
	if err != nil {
		return err
	}
	if got != cacheSums {
		return fmt.Errorf("the restored cache differs from the backup:\n got %s\nwant %s", got, cacheSums)
	}
	show("sha256sum in the new pod, identical to the backed-up data:", got)
	say("restore verified: byte-identical")

	if err := namespaceDeleted(ctx, e, location); err != nil {
		return err
	}

	if keep {
		step("The cluster stays up (KEEP=1). Explore it, then remove everything with `make cluster-down`:")
		say("export KUBECONFIG=%s", c.Kubeconfig())
		say("%s/kubectl get holdfast -A", c.ToolsBin)
	}
	return nil
}

// namespaceDeleted is the last chapter: a whole namespace deleted by mistake, and
// applied again from Git. The steps are the e2e story NamespaceDeletedRestoredFromTheStore's.
func namespaceDeleted(ctx context.Context, e *e2e.Env, location string) error {
	step("Deploying a wiki in namespace %q, whose manifest lets it adopt the backups of an earlier namespace of that name", e2e.WikiNamespace)
	m, _ := e.Manifest("wiki-namespace.yaml")
	show("The namespace, as the administrators keep it in Git:", m)
	if err := e.DeployWiki(ctx); err != nil {
		return err
	}
	if err := e.ApplyWikiPolicy(ctx, location); err != nil {
		return err
	}
	run, err := e.RunPolicyNamed(ctx, e2e.WikiPolicy, "demo-wiki-1")
	if err != nil {
		return err
	}
	backup := run.Backup(e2e.WikiVolume)
	if backup == nil {
		return fmt.Errorf("no backup of the wiki's %s volume: %+v", e2e.WikiVolume, run.Backups)
	}
	sums, err := e.ChecksumsIn(ctx, e2e.WikiNamespace, "deployment/wiki", e2e.WikiDir)
	if err != nil {
		return err
	}
	show("Backed up with the wiki policy; the pages (sha256sum in the pod):", sums)

	step("kubectl delete namespace %s: by mistake, the whole namespace", e2e.WikiNamespace)
	if err := e.DeleteNamespace(ctx, e2e.WikiNamespace); err != nil {
		return err
	}
	say("the wiki's pod, its emptyDir, its PodVolumeBackups and its BackupRepository went with the namespace;")
	say("the snapshots stay in the store, and the repository's key Secret in holdfast-system")

	step("Applying the namespace, the VolumeRestore and the wiki again from the same manifests, the restore first")
	m, _ = e.Manifest("wiki-restore.yaml")
	show("The VolumeRestore, kept in Git next to the wiki:", m)
	say("the restore reads the store, finds the repository of namespace %s, connects it again and lists its restore points;", e2e.WikiNamespace)
	say("once it says %q, the wiki is applied", e2e.ReadyForPods)
	restored, err := e.RestoreWiki(ctx)
	if err != nil {
		return err
	}
	out, _ := e.Kubectl(ctx, "", "-n", e2e.WikiNamespace, "get", "brepo", "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,SOURCE:.status.restorePoints[*].sourcePath,SNAPSHOTS:.status.restorePoints[*].snapshots,EARLIER NAMESPACE UID:.status.restorePoints[*].namespaceUID")
	show("The repository found in the store, with the restore points of the earlier namespace:", out)
	var inits []string
	for _, ic := range restored.Pod.Spec.InitContainers {
		inits = append(inits, ic.Name)
	}
	say("the wiki's new pod %s waited in %s until its pages were back", restored.Pod.Name, strings.Join(inits, ", "))
	show("The wiki's log: it started on its restored pages:", restored.Log)
	got, err := e.ChecksumsIn(ctx, e2e.WikiNamespace, "deployment/wiki", e2e.WikiDir)
	if err != nil {
		return err
	}
	if got != sums {
		return fmt.Errorf("the restored wiki differs from the backup:\n got %s\nwant %s", got, sums)
	}
	show("sha256sum in the new namespace's pod, identical to the backup of the deleted one:", got)
	say("namespace restored: byte-identical. docs/disaster-recovery.md has the runbook, also for a lost cluster")
	return nil
}
