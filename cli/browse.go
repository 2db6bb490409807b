package cli

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/browse"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// browseOptions are the flags of snapshots, ls and get: which volume, which snapshot.
type browseOptions struct {
	*options
	pod, volume, source string
	snapshot            string
	ttl                 time.Duration
	timeout             time.Duration
	to                  string
	// progress is how often get reports its progress.
	progress time.Duration
}

// dialRelay reaches port of a relay pod and returns the base URL and what stops it:
// kubectl port-forward's way through the API server (tests replace it: envtest has no
// kubelet).
var dialRelay = portForward

func (b *browseOptions) sourceFlags(cmd *cobra.Command) {
	b.namespaceFlags(cmd, false)
	cmd.Flags().StringVar(&b.pod, "pod", "", "a pod whose volume to read (with --volume), instead of a claim")
	cmd.Flags().StringVar(&b.volume, "volume", "", "the volume of --pod")
	cmd.Flags().StringVar(&b.source, "source", "", "a source path as the store names it (/pvc/<claim>, /replicaset/<name>/<volume>, ...), instead of a claim")
	cmd.Flags().DurationVar(&b.timeout, "timeout", 5*time.Minute, "give up waiting for the manager after this long")
}

func (b *browseOptions) snapshotFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&b.snapshot, "snapshot", "", "the restore point to read (a snapshot ID from kubectl holdfast snapshots; default the newest)")
	cmd.Flags().DurationVar(&b.ttl, "ttl", 10*time.Minute, "how long the browse session lives (1m to 2h); later commands reuse it while it lives")
}

// claimArgs takes the claim from args unless --pod or --source names the volume, and
// returns the rest.
func (b *browseOptions) claimArgs(args []string) (claim string, rest []string, err error) {
	switch {
	case b.pod != "" && b.source != "":
		return "", nil, usageError("give --pod or --source, not both")
	case b.pod != "" && b.volume == "":
		return "", nil, usageError("--pod needs --volume: which of its volumes")
	case b.pod == "" && b.volume != "":
		return "", nil, usageError("--volume is the volume of --pod")
	case b.pod != "" || b.source != "":
		return "", args, nil
	case len(args) == 0:
		return "", nil, usageError("name a claim, or give --pod and --volume, or --source")
	}
	return args[0], args[1:], nil
}

// sourcePath resolves the volume the flags name to its source identity, as the policy
// controller names it.
func (b *browseOptions) sourcePath(ctx context.Context, kube client.Client, ns, claim string) (string, error) {
	switch {
	case b.source != "":
		if _, err := browse.SourcePath(b.source); err != nil || !strings.HasPrefix(b.source, "/") {
			return "", usageError("--source %q is not a source path (it starts with / and has no empty, . or .. segment)", b.source)
		}
		return b.source, nil
	case claim != "":
		if _, err := browse.SourcePath(claim); err != nil {
			return "", usageError("%q is not a claim name", claim)
		}
		return identity.ClaimSourcePath(claim), nil
	}
	pod := &corev1.Pod{}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: b.pod}, pod); err != nil {
		return "", fmt.Errorf("getting pod %s/%s: %w", ns, b.pod, err)
	}
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == b.volume {
			return identity.SourcePath(pod, &pod.Spec.Volumes[i], replicaSetOwner(ctx, kube)), nil
		}
	}
	return "", fmt.Errorf("pod %s/%s has no volume %q", ns, b.pod, b.volume)
}

// replicaSetOwner reads a ReplicaSet's controller, as the policy controller does to
// name the volumes of a Deployment's pods after the Deployment.
func replicaSetOwner(ctx context.Context, kube client.Client) identity.OwnerOfReplicaSet {
	return func(ns, name string) *metav1.OwnerReference {
		rs := &appsv1.ReplicaSet{}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rs); err != nil {
			return nil
		}
		return metav1.GetControllerOf(rs)
	}
}

func newSnapshots(o *options) *cobra.Command {
	b := &browseOptions{options: o}
	cmd := &cobra.Command{
		Use:   "snapshots [CLAIM]",
		Short: "List the restore points of a claim or pod volume, from the store",
		Long: `snapshots lists what the store holds for one volume: every restore point on every
storage location, with both uploaders, newest first, also those whose PodVolumeBackup
is gone (a deleted namespace this one adopts). The manager reads the store: it creates
a BrowseSession that lists them and ends after --ttl.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return b.snapshots(cmd.Context(), cmd.OutOrStdout(), args)
		},
	}
	b.sourceFlags(cmd)
	cmd.Flags().DurationVar(&b.ttl, "ttl", time.Minute, "how long the listing session lives (1m to 2h)")
	o.outputFlag(cmd)
	return cmd
}

func (b *browseOptions) snapshots(ctx context.Context, out io.Writer, args []string) error {
	if err := b.checkOutput(); err != nil {
		return err
	}
	claim, rest, err := b.claimArgs(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError("snapshots takes one claim, not %q", rest)
	}
	s, err := b.session(ctx, claim, false)
	if err != nil {
		return err
	}
	if b.output != "table" {
		return printStructured(out, b.output, s.Status.RestorePoints)
	}
	if len(s.Status.RestorePoints) == 0 {
		fmt.Fprintf(out, "No restore points of %s in namespace %s: %s\n", s.Status.SourcePath, s.Namespace, readyMessage(s))
		return nil
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "SNAPSHOT\tTIME\tSIZE\tUPLOADER\tLOCATION\tBACKUP")
	for _, p := range s.Status.RestorePoints {
		backup := orDash(p.Backup)
		if p.NamespaceUID != "" {
			backup += " (namespace " + p.NamespaceUID + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.SnapshotID, p.Time.UTC().Format(time.RFC3339), storage.FormatBytes(p.Size),
			p.Uploader, orDash(p.StorageLocation), backup)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.Status.RestorePointsOmitted > 0 {
		fmt.Fprintf(out, "(%d older restore points not shown)\n", s.Status.RestorePointsOmitted)
	}
	return nil
}

func readyMessage(s *v1.BrowseSession) string {
	for _, c := range s.Status.Conditions {
		if c.Type == v1.ConditionReady {
			return c.Message
		}
	}
	return ""
}

func newLs(o *options) *cobra.Command {
	b := &browseOptions{options: o}
	cmd := &cobra.Command{
		Use:   "ls [CLAIM] [PATH]",
		Short: "List a directory of a restore point",
		Long: `ls lists the entries of a directory (the root without PATH) of one restore point of a
claim or pod volume. The manager reads the store; a relay pod in the namespace serves
the restore point to this command through kubectl port-forward, for --ttl. Each listing
is an event on the BrowseSession, naming you.`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return b.ls(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
		},
	}
	b.sourceFlags(cmd)
	b.snapshotFlags(cmd)
	o.outputFlag(cmd)
	return cmd
}

func (b *browseOptions) ls(ctx context.Context, out, errOut io.Writer, args []string) error {
	if err := b.checkOutput(); err != nil {
		return err
	}
	claim, rest, err := b.claimArgs(args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usageError("ls takes one path, not %q", rest)
	}
	p := ""
	if len(rest) == 1 {
		p = cleanPath(rest[0])
	}
	base, stop, _, err := b.open(ctx, errOut, claim)
	if err != nil {
		return err
	}
	defer stop()
	var entries []v1.BrowseEntry
	if err := getJSON(ctx, base+v1.BrowseList, p, &entries); err != nil {
		return err
	}
	if b.output != "table" {
		return printStructured(out, b.output, entries)
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "MODE\tSIZE\tMODIFIED\tNAME")
	for _, e := range entries {
		name := e.Name
		switch e.Type {
		case "dir":
			name += "/"
		case "symlink":
			name += " -> " + e.Target
		}
		size := "-"
		if e.Size >= 0 {
			size = storage.FormatBytes(e.Size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Mode, size, e.ModTime.UTC().Format(time.RFC3339), name)
	}
	return tw.Flush()
}

func newGet(o *options) *cobra.Command {
	b := &browseOptions{options: o, progress: time.Second}
	cmd := &cobra.Command{
		Use:   "get [CLAIM] PATH",
		Short: "Download a file or directory of a restore point",
		Long: `get downloads a file or a directory (with everything below it) of one restore point
into --to (default the current directory), as PATH's last element; it refuses to
write over anything there. Progress goes to stderr. The manager reads the store; a
relay pod in the namespace serves the restore point to this command through kubectl
port-forward, for --ttl. Each download is an event on the BrowseSession, naming you.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return b.get(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
		},
	}
	b.sourceFlags(cmd)
	b.snapshotFlags(cmd)
	cmd.Flags().StringVar(&b.to, "to", ".", "the local directory to download into")
	return cmd
}

func (b *browseOptions) get(ctx context.Context, out, errOut io.Writer, args []string) error {
	claim, rest, err := b.claimArgs(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageError("get takes one path of the restore point")
	}
	p := cleanPath(rest[0])
	if p == "" {
		return usageError("name a file or directory of the restore point; to download it all, restore it (kubectl holdfast restore)")
	}
	dest, err := os.OpenRoot(b.to)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer dest.Close()
	name := path.Base(p)
	if _, err := dest.Lstat(name); err == nil {
		return fmt.Errorf("%s exists in %s: remove it or choose another --to", name, b.to)
	}
	base, stop, s, err := b.open(ctx, errOut, claim)
	if err != nil {
		return err
	}
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+v1.BrowseGet+"?path="+url.QueryEscape(p), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	total, _ := strconv.ParseInt(resp.Header.Get(v1.BrowseTotalBytesHeader), 10, 64)
	var done atomic.Int64
	stopProgress := b.report(errOut, p, total, &done)
	files, err := extract(tar.NewReader(resp.Body), dest, &done)
	stopProgress()
	if err != nil {
		return fmt.Errorf("downloading %s of snapshot %s: %w (what was written so far stays in %s)", p, s.Spec.SnapshotID, err, b.to)
	}
	fmt.Fprintf(out, "downloaded /%s of snapshot %s of %s into %s: %s, %s\n", p, s.Spec.SnapshotID, s.Status.SourcePath,
		path.Join(b.to, name), count(files, "file"), storage.FormatBytes(done.Load()))
	return nil
}

// report prints the progress of a download every b.progress until the returned
// function is called.
func (b *browseOptions) report(errOut io.Writer, p string, total int64, done *atomic.Int64) func() {
	quit := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(b.progress)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if total > 0 {
					fmt.Fprintf(errOut, "%s: %s of %s (%d%%)\n", p, storage.FormatBytes(done.Load()), storage.FormatBytes(total), done.Load()*100/total)
				} else {
					fmt.Fprintf(errOut, "%s: %s\n", p, storage.FormatBytes(done.Load()))
				}
			}
		}
	}()
	return func() { close(quit); <-ended }
}

// extract writes the entries of a download below dest, which no entry can leave
// (os.Root: no "..", no absolute name, no link followed out of it), and returns the
// number of files.
func extract(tr *tar.Reader, dest *os.Root, done *atomic.Int64) (int, error) {
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, err
		}
		name := path.Clean(h.Name)
		if name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return files, fmt.Errorf("the download holds an entry named %q, outside the directory asked for", h.Name)
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := dest.MkdirAll(name, 0o755); err != nil {
				return files, err
			}
			_ = dest.Chmod(name, mode|0o700)
		case tar.TypeReg:
			if err := dest.MkdirAll(path.Dir(name), 0o755); err != nil {
				return files, err
			}
			f, err := dest.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return files, err
			}
			_, err = io.Copy(f, &counting{r: tr, n: done})
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return files, err
			}
			files++
			_ = dest.Chtimes(name, h.ModTime, h.ModTime)
		case tar.TypeSymlink:
			if err := dest.MkdirAll(path.Dir(name), 0o755); err != nil {
				return files, err
			}
			if err := dest.Symlink(h.Linkname, name); err != nil {
				return files, err
			}
		}
	}
}

type counting struct {
	r io.Reader
	n *atomic.Int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// cleanPath turns a path as a user types it (/data/x/, ./data) into the session's form.
func cleanPath(p string) string {
	p = strings.Trim(path.Clean("/"+p), "/")
	return p
}

// open finds or creates the user's live session for the snapshot and reaches its relay
// pod; stop ends the port-forward (the session ends with its ttl).
func (b *browseOptions) open(ctx context.Context, errOut io.Writer, claim string) (string, func(), *v1.BrowseSession, error) {
	s, err := b.session(ctx, claim, true)
	if err != nil {
		return "", nil, nil, err
	}
	cfg, err := b.restConfig()
	if err != nil {
		return "", nil, nil, err
	}
	base, stop, err := dialRelay(ctx, cfg, s.Namespace, s.Status.RelayPod, v1.RelayPort)
	if err != nil {
		return "", nil, nil, err
	}
	fmt.Fprintf(errOut, "snapshot %s of %s, through BrowseSession %s/%s (until %s)\n", s.Spec.SnapshotID, s.Status.SourcePath,
		s.Namespace, s.Name, browse.ExpiresAt(s).UTC().Format(time.RFC3339))
	return base, stop, s, nil
}

func (o *options) restConfig() (*rest.Config, error) {
	cfg, err := o.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return cfg, nil
}

// session returns a Ready session of the user for the volume (and, with open, for the
// snapshot, the newest when --snapshot is not given): a live one the user made before,
// else a new one, waited for.
func (b *browseOptions) session(ctx context.Context, claim string, open bool) (*v1.BrowseSession, error) {
	kube, err := b.kube()
	if err != nil {
		return nil, err
	}
	ns, err := b.targetNamespace()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	source, err := b.sourcePath(ctx, kube, ns, claim)
	if err != nil {
		return nil, err
	}
	review := &authnv1.SelfSubjectReview{}
	if err := kube.Create(ctx, review); err != nil {
		return nil, fmt.Errorf("asking the API server who you are (SelfSubjectReview): %w", err)
	}
	user := review.Status.UserInfo.Username
	id := b.snapshot
	if open && id == "" {
		list, err := b.sessionFor(ctx, kube, ns, source, "", user)
		if err != nil {
			return nil, err
		}
		if len(list.Status.RestorePoints) == 0 {
			return nil, fmt.Errorf("no restore points of %s in namespace %s: %s", list.Status.SourcePath, ns, readyMessage(list))
		}
		id = list.Status.RestorePoints[0].SnapshotID
	}
	return b.sessionFor(ctx, kube, ns, source, id, user)
}

// sessionFor returns user's live session of source and snapshot id (empty: a listing),
// else a new one, waited for.
func (b *browseOptions) sessionFor(ctx context.Context, kube client.WithWatch, ns, source, id, user string) (*v1.BrowseSession, error) {
	if s := b.liveSession(ctx, kube, ns, source, id, user); s != nil {
		return s, nil
	}
	s := &v1.BrowseSession{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "browse-", Namespace: ns},
		Spec:       v1.BrowseSessionSpec{Source: source, SnapshotID: id, RequestedBy: user, TTL: &metav1.Duration{Duration: b.ttl}},
	}
	if strings.HasPrefix(source, "/pvc/") {
		s.Spec.Source = strings.TrimPrefix(source, "/pvc/")
	}
	if err := kube.Create(ctx, s); err != nil {
		return nil, fmt.Errorf("creating a BrowseSession in namespace %s: %w", ns, err)
	}
	return waitSession(ctx, kube, s)
}

// liveSession finds a Ready session of user for source and snapshot id that lives at
// least another minute.
func (b *browseOptions) liveSession(ctx context.Context, kube client.Client, ns, source, id, user string) *v1.BrowseSession {
	var list v1.BrowseSessionList
	if err := kube.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil
	}
	for i := range list.Items {
		s := &list.Items[i]
		if s.Status.SourcePath == source && s.Spec.SnapshotID == id && s.Spec.RequestedBy == user &&
			s.Status.Phase == v1.BrowseReady && time.Until(browse.ExpiresAt(s)) > time.Minute && s.DeletionTimestamp.IsZero() {
			return s
		}
	}
	return nil
}

// waitSession watches s until it is Ready (or Failed, or Expired).
func waitSession(ctx context.Context, kube client.WithWatch, s *v1.BrowseSession) (*v1.BrowseSession, error) {
	sel := fields.OneTermEqualSelector("metadata.name", s.Name)
	for {
		var list v1.BrowseSessionList
		if err := kube.List(ctx, &list, client.InNamespace(s.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
			return nil, fmt.Errorf("reading BrowseSession %s/%s: %w", s.Namespace, s.Name, err)
		}
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("BrowseSession %s/%s was deleted", s.Namespace, s.Name)
		}
		if done, err := sessionDone(&list.Items[0]); done {
			return &list.Items[0], err
		}
		w, err := kube.Watch(ctx, &v1.BrowseSessionList{}, client.InNamespace(s.Namespace), &client.ListOptions{
			FieldSelector: sel, Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			return nil, fmt.Errorf("watching BrowseSession %s/%s: %w", s.Namespace, s.Name, err)
		}
		got, err := watchSession(ctx, w)
		w.Stop()
		if got != nil || err != nil {
			return got, err
		}
	}
}

func watchSession(ctx context.Context, w watch.Interface) (*v1.BrowseSession, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the manager to serve the browse session: %w", ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return nil, nil
			}
			s, ok := ev.Object.(*v1.BrowseSession)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				return nil, fmt.Errorf("BrowseSession %s/%s was deleted", s.Namespace, s.Name)
			}
			if done, err := sessionDone(s); done {
				return s, err
			}
		}
	}
}

func sessionDone(s *v1.BrowseSession) (bool, error) {
	if s.Status.ObservedGeneration != s.Generation {
		return false, nil
	}
	switch s.Status.Phase {
	case v1.BrowseReady:
		return true, nil
	case v1.BrowseFailed, v1.BrowseExpired:
		return true, fmt.Errorf("BrowseSession %s/%s %s: %s", s.Namespace, s.Name, s.Status.Phase, readyMessage(s))
	}
	return false, nil
}

// getJSON reads a browse endpoint's JSON answer.
func getJSON(ctx context.Context, endpoint, p string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?path="+url.QueryEscape(p), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reading /%s: %w", p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func answerError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("the manager answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
}
