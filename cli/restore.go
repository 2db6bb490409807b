package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

type restoreOptions struct {
	*options
	pod, claim, selector, claimSelector string
	volumes                             []string
	backup, before                      string
	paths                               []string
	from, subPath, sourceNamespace      string
	runningPods                         string
	name                                string
	// output is -o of restore, apart from options.output: its default differs.
	output  string
	dryRun  dryRunFlag
	noWait  bool
	timeout time.Duration
	// now is the clock of --before and of the generated name (tests set it).
	now func() time.Time
}

// dryRunFlag is --dry-run[=client|server|none], as kubectl has it.
type dryRunFlag string

func (d *dryRunFlag) String() string { return string(*d) }
func (d *dryRunFlag) Type() string   { return "string" }
func (d *dryRunFlag) Set(s string) error {
	switch s {
	case "client", "true":
		*d = "client"
	case "server":
		*d = "server"
	case "none", "false", "":
		*d = ""
	default:
		return fmt.Errorf("must be client, server or none, not %q", s)
	}
	return nil
}

func newRestore(o *options) *cobra.Command {
	r := &restoreOptions{options: o, now: time.Now}
	cmd := &cobra.Command{
		Use:   "restore (--pod POD | -l SELECTOR | --claim CLAIM | --claim-selector SELECTOR) [--volume V]... [--backup PVB | --before TIME] [--path P]... [--from SOURCE] [--sub-path DIR] [--dry-run[=server]]",
		Short: "Write a VolumeRestore (all of a volume, or some paths) and follow it to its end",
		Long: `restore writes a VolumeRestore in the namespace (-n, else the kubeconfig context's) and
follows it until it ends, printing each volume's progress. Exit 0 when it Completed,
1 when it ended PartiallyFailed, Failed or Expired (with its message).

What to restore into (exactly one):
  --pod POD              one pod, selected by its labels (they must select only it)
  -l, --selector SEL     the pods a label selector selects
  --claim CLAIM          one PersistentVolumeClaim (through a writer pod when no pod uses it)
  --claim-selector SEL   the claims a label selector selects (a StatefulSet's, before it is scaled up)

A pod that already runs, or a claim that a running pod uses, is written into only with
--running-pods=Overwrite: the snapshot's files (or only --path) are written over the
live volume, nothing else in it is touched.

--dry-run prints the VolumeRestore as YAML to commit to Git and creates nothing;
--dry-run=server has the API server validate and default it first.`,
		Example: `  # Give back one directory deleted by mistake, into the running pod
  kubectl holdfast restore -n notes --pod notes --volume data --path notes/2026 --running-pods=Overwrite

  # A claim no pod uses, as it was before 2 hours ago, into a sub-directory to compare
  kubectl holdfast restore --claim data-db-0 --before 2h --sub-path restored

  # The manifest, to commit instead of applying
  kubectl holdfast restore --claim-selector app=vault --dry-run > restore.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return r.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cmd.Flags().Changed("running-pods"))
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.pod, "pod", "", "restore into this pod (its labels must select only it)")
	f.StringVarP(&r.selector, "selector", "l", "", "restore into the pods this label selector selects (spec.podSelector)")
	f.StringVar(&r.claim, "claim", "", "restore into this PersistentVolumeClaim")
	f.StringVar(&r.claimSelector, "claim-selector", "", "restore into the claims this label selector selects (spec.claimSelector)")
	f.StringArrayVar(&r.volumes, "volume", nil, "restore only this volume of the pods (spec.volumes); repeatable; default every volume with a backup")
	f.StringVar(&r.backup, "backup", "", "restore this PodVolumeBackup (kubectl get pvb); one volume only")
	f.StringVar(&r.before, "before", "", "restore the newest backup created at or before this time: RFC 3339 (2026-12-07T02:00:00Z) or how long ago (2h, 30m); default the latest")
	f.StringArrayVar(&r.paths, "path", nil, "restore only this file or directory, relative to the volume's root (spec.paths); repeatable; default everything")
	f.StringVar(&r.from, "from", "", "restore from the backups of another claim or source path of the namespace (spec.volumes[].from); one volume only")
	f.StringVar(&r.subPath, "sub-path", "", "restore into this directory of the volume instead of its root (spec.target.subPath)")
	f.StringVar(&r.sourceNamespace, "source-namespace", "", "restore the backups of another namespace, which must grant it (spec.sourceNamespace)")
	f.StringVar(&r.runningPods, "running-pods", "", "Overwrite: write into pods that already run (and claims they use); Skip: leave them, restore only pods created from now on (spec.runningPods)")
	f.StringVar(&r.name, "name", "", "the VolumeRestore's name (default <pod or claim>-<time>)")
	f.Var(&r.dryRun, "dry-run", "print the VolumeRestore and create nothing: client (the default with no value) or server (validated and defaulted by the API server)")
	f.Lookup("dry-run").NoOptDefVal = "client"
	f.BoolVar(&r.noWait, "no-wait", false, "create the VolumeRestore and return without following it")
	f.DurationVar(&r.timeout, "timeout", 0, "give up following the restore after this long, exit 1 (0: no limit)")
	o.namespaceFlags(cmd, false)
	cmd.Flags().StringVarP(&r.output, "output", "o", "", "yaml or json: print the VolumeRestore (with --dry-run, the default is yaml; else its final state, and progress goes to stderr)")
	return cmd
}

// restorePathRule is the API's rule for spec.paths, spec.target.subPath
// (RestorePath): relative, no empty, "." or ".." segment.
var restorePathRule = regexp.MustCompile(`(^|/)[.]{0,2}(/|$)`)

// claimNameRule and sourcePathRule are the API's rule for spec.volumes[].from: a
// claim's name, or a source path without an empty, "." or ".." segment.
var (
	claimNameRule  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	sourcePathRule = regexp.MustCompile(`/[.]{0,2}(/|$)`)
)

// validate checks the flags before anything talks to the cluster; each error names its
// flag.
func (r *restoreOptions) validate() error {
	targets := 0
	for _, s := range []string{r.pod, r.selector, r.claim, r.claimSelector} {
		if s != "" {
			targets++
		}
	}
	if targets != 1 {
		return usageError("give exactly one of --pod, -l/--selector, --claim and --claim-selector: what to restore into")
	}
	for flag, sel := range map[string]string{"-l/--selector": r.selector, "--claim-selector": r.claimSelector} {
		if sel == "" {
			continue
		}
		if _, err := labels.Parse(sel); err != nil {
			return usageError("%s %q is not a label selector: %v", flag, sel, err)
		}
	}
	claims := r.claim != "" || r.claimSelector != ""
	if claims && len(r.volumes) > 0 {
		return usageError("--volume names volumes of pods; with --claim or --claim-selector the claims are the volumes")
	}
	for _, v := range r.volumes {
		if v == "" || len(v) > 63 {
			return usageError("--volume %q is not a volume name", v)
		}
	}
	one := r.claim != "" || len(r.volumes) == 1
	if r.backup != "" && !one {
		return usageError("--backup names the backup of one volume: give --claim, or --volume once")
	}
	if r.from != "" && !one {
		return usageError("--from gives one volume another source: give --claim, or --volume once")
	}
	if r.backup != "" && r.before != "" {
		return usageError("give at most one of --backup and --before")
	}
	if r.before != "" {
		if _, err := r.beforeTime(); err != nil {
			return err
		}
	}
	for _, p := range r.paths {
		if p == "" || restorePathRule.MatchString(p) {
			return usageError("--path %q must be relative to the volume's root: no leading /, no trailing /, and no empty, . or .. segment", p)
		}
	}
	if r.subPath != "" && restorePathRule.MatchString(r.subPath) {
		return usageError("--sub-path %q must be relative to the volume's root: no leading /, no trailing /, and no empty, . or .. segment", r.subPath)
	}
	if r.from != "" {
		path := strings.HasPrefix(r.from, "/")
		if path && sourcePathRule.MatchString(r.from) || !path && !claimNameRule.MatchString(r.from) {
			return usageError("--from %q must be a claim name or a source path (/pvc/<claim>, /<kind>/<name>/<volume>) without empty, . or .. segments", r.from)
		}
	}
	if _, err := r.runningPodsPolicy(); err != nil {
		return err
	}
	switch r.output {
	case "", "yaml", "json":
	default:
		return usageError("--output must be yaml or json, not %q", r.output)
	}
	if r.timeout < 0 {
		return usageError("--timeout must not be negative")
	}
	return nil
}

func (r *restoreOptions) runningPodsPolicy() (v1.RunningPodsPolicy, error) {
	switch strings.ToLower(r.runningPods) {
	case "":
		return "", nil
	case "skip":
		return v1.RunningPodsSkip, nil
	case "overwrite":
		return v1.RunningPodsOverwrite, nil
	}
	return "", usageError("--running-pods must be Skip or Overwrite, not %q", r.runningPods)
}

// beforeTime is --before as a time: an RFC 3339 time, or a duration ago.
func (r *restoreOptions) beforeTime() (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, r.before); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(r.before)
	if err != nil || d <= 0 {
		return time.Time{}, usageError("--before %q is neither an RFC 3339 time (2026-12-07T02:00:00Z) nor how long ago (2h, 30m)", r.before)
	}
	return r.now().Add(-d).Truncate(time.Second), nil
}

// spec is the VolumeRestore's spec from the flags; podSelector is the selector of
// --pod or -l.
func (r *restoreOptions) spec(podSelector *metav1.LabelSelector) v1.VolumeRestoreSpec {
	var s v1.VolumeRestoreSpec
	switch {
	case podSelector != nil:
		s.PodSelector = *podSelector
	case r.claim != "":
		s.ClaimSelector = &metav1.LabelSelector{}
		s.Volumes = []v1.RestoreVolume{{Name: r.claim}}
	default:
		sel, _ := metav1.ParseToLabelSelector(r.claimSelector)
		s.ClaimSelector = sel
	}
	for _, v := range r.volumes {
		s.Volumes = append(s.Volumes, v1.RestoreVolume{Name: v})
	}
	if r.from != "" {
		s.Volumes[0].From = r.from
	}
	s.RunningPods, _ = r.runningPodsPolicy()
	switch {
	case r.backup != "":
		s.Source = &v1.RestoreSource{PodVolumeBackup: r.backup}
	case r.before != "":
		t, _ := r.beforeTime()
		s.Source = &v1.RestoreSource{Before: &metav1.Time{Time: t.UTC()}}
	default:
		s.Source = &v1.RestoreSource{Latest: true}
	}
	s.SourceNamespace = r.sourceNamespace
	for _, p := range r.paths {
		s.Paths = append(s.Paths, v1.RestorePath(p))
	}
	if r.subPath != "" {
		s.Target = &v1.RestoreTarget{SubPath: v1.RestorePath(r.subPath)}
	}
	return s
}

// restoreName is --name, or the pod's or claim's name and the time.
func (r *restoreOptions) restoreName() string {
	if r.name != "" {
		return r.name
	}
	base := "restore"
	switch {
	case r.pod != "":
		base = r.pod
	case r.claim != "":
		base = r.claim
	}
	if len(base) > 200 {
		base = strings.TrimRight(base[:200], "-.")
	}
	return base + "-" + r.now().UTC().Format("20060102-150405")
}

func (r *restoreOptions) run(ctx context.Context, stdout, stderr io.Writer, runningPodsGiven bool) error {
	if err := r.validate(); err != nil {
		return err
	}
	kube, err := r.kube()
	if err != nil {
		return err
	}
	ns, err := r.targetNamespace()
	if err != nil {
		return err
	}
	var podSelector *metav1.LabelSelector
	switch {
	case r.pod != "":
		if podSelector, err = r.selectorOfPod(ctx, kube, ns); err != nil {
			return err
		}
	case r.selector != "":
		if podSelector, err = metav1.ParseToLabelSelector(r.selector); err != nil {
			return usageError("-l/--selector %q: %v", r.selector, err)
		}
	}
	// A manifest for Git is applied later, when what runs may differ: only a restore
	// created now must say what it does to what runs now.
	if r.dryRun == "" && !runningPodsGiven && (r.pod != "" || r.claim != "") {
		if err := r.requireRunningPodsChoice(ctx, kube, ns); err != nil {
			return err
		}
	}
	vr := &v1.VolumeRestore{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "VolumeRestore"},
		ObjectMeta: metav1.ObjectMeta{Name: r.restoreName(), Namespace: ns},
		Spec:       r.spec(podSelector),
	}
	if r.dryRun != "" {
		if r.dryRun == "server" {
			if err := kube.Create(ctx, vr, client.DryRunAll); err != nil {
				return createError(vr, err)
			}
		}
		format := r.output
		if format == "" {
			format = "yaml"
		}
		return printStructured(stdout, format, cleanRestore(vr, false))
	}
	if err := kube.Create(ctx, vr); err != nil {
		return createError(vr, err)
	}
	progress := stdout
	if r.output != "" {
		progress = stderr
	}
	fmt.Fprintf(progress, "VolumeRestore %s created in namespace %s\n", vr.Name, ns)
	if r.noWait {
		if r.output != "" {
			return printStructured(stdout, r.output, cleanRestore(vr, false))
		}
		return nil
	}
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	f := &restoreFollower{kube: kube, out: progress, ns: ns, name: vr.Name, start: time.Now(), lines: map[string]string{}}
	final, err := f.follow(ctx)
	if r.output != "" && final != nil {
		if perr := printStructured(stdout, r.output, cleanRestore(final, true)); perr != nil {
			return perr
		}
	}
	return err
}

// createError is the API server's refusal as it says it (a validation error names
// the object and the field), other errors with what was being done.
func createError(vr *v1.VolumeRestore, err error) error {
	if apierrors.IsInvalid(err) || apierrors.IsAlreadyExists(err) || apierrors.IsForbidden(err) {
		return err
	}
	return fmt.Errorf("creating VolumeRestore %s in namespace %s: %w", vr.Name, vr.Namespace, err)
}

// selectorOfPod is a podSelector that selects --pod and no other pod of ns: the
// StatefulSet pod-name label when the pod has it, else all the pod's labels.
func (r *restoreOptions) selectorOfPod(ctx context.Context, kube client.Reader, ns string) (*metav1.LabelSelector, error) {
	var pod corev1.Pod
	if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: r.pod}, &pod); err != nil {
		return nil, fmt.Errorf("getting pod %s in namespace %s: %w", r.pod, ns, err)
	}
	match := pod.Labels
	if name := pod.Labels["statefulset.kubernetes.io/pod-name"]; name != "" {
		match = map[string]string{"statefulset.kubernetes.io/pod-name": name}
	}
	if len(match) == 0 {
		return nil, fmt.Errorf("pod %s has no labels, and a VolumeRestore selects pods by label: label it, or give -l", r.pod)
	}
	var pods corev1.PodList
	if err := kube.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(match)); err != nil {
		return nil, fmt.Errorf("listing the pods of namespace %s: %w", ns, err)
	}
	var others []string
	for _, p := range pods.Items {
		// As the restore controller, pods that ended or are going away do not count.
		if p.Name != pod.Name && p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			others = append(others, p.Name)
		}
	}
	if len(others) > 0 {
		sort.Strings(others)
		return nil, fmt.Errorf("the labels of pod %s (%s) also select %s %s, and a VolumeRestore selects pods by label: give -l to restore into all of them",
			r.pod, labels.SelectorFromSet(match), count(len(others), "other pod"), strings.Join(others, ", "))
	}
	return &metav1.LabelSelector{MatchLabels: match}, nil
}

// requireRunningPodsChoice fails when --pod names a pod that exists, or --claim a
// claim that a running pod uses, and --running-pods was not given: a restore writes
// into such a pod only with runningPods: Overwrite, and with Skip would restore
// nothing, so the user says which.
func (r *restoreOptions) requireRunningPodsChoice(ctx context.Context, kube client.Reader, ns string) error {
	if r.pod != "" {
		return usageError("pod %s exists already, so no restore-wait holds it: to write into its volumes (the snapshot's files over the live ones, nothing else touched) give --running-pods=Overwrite; "+
			"--running-pods=Skip restores only pods created from now on", r.pod)
	}
	var pods corev1.PodList
	if err := kube.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing the pods of namespace %s: %w", ns, err)
	}
	for _, p := range pods.Items {
		if !p.DeletionTimestamp.IsZero() || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == r.claim {
				return usageError("claim %s is used by pod %s: to write into it while the pod runs give --running-pods=Overwrite; "+
					"--running-pods=Skip leaves it as it is (stop the pod first to restore it through a writer pod)", r.claim, p.Name)
			}
		}
	}
	return nil
}

// restoreManifest is a VolumeRestore as one commits it: no server-set metadata.
type restoreManifest struct {
	APIVersion string                  `json:"apiVersion"`
	Kind       string                  `json:"kind"`
	Metadata   restoreMetadata         `json:"metadata"`
	Spec       v1.VolumeRestoreSpec    `json:"spec"`
	Status     *v1.VolumeRestoreStatus `json:"status,omitempty"`
}

type restoreMetadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

func cleanRestore(vr *v1.VolumeRestore, withStatus bool) restoreManifest {
	m := restoreManifest{APIVersion: v1.GroupVersion.String(), Kind: "VolumeRestore",
		Metadata: restoreMetadata{Name: vr.Name, Namespace: vr.Namespace}, Spec: vr.Spec}
	if withStatus {
		m.Status = &vr.Status
	}
	return m
}

// restoreFollower watches a VolumeRestore and its PodVolumeRestores until the restore
// ends, printing the restore's phase and each volume's progress when they change.
type restoreFollower struct {
	kube     client.WithWatch
	out      io.Writer
	ns, name string
	start    time.Time

	vr    *v1.VolumeRestore
	pvrs  map[string]*v1.PodVolumeRestore
	phase string
	// lines is the last line printed per volume.
	lines map[string]string
}

// errRestoreDeleted: the VolumeRestore went away while it was followed.
var errRestoreDeleted = errors.New("the VolumeRestore was deleted")

// follow lists and watches the restore and its PodVolumeRestores until the restore
// ends; the error is its outcome unless it Completed. It returns the restore as last
// seen.
func (f *restoreFollower) follow(ctx context.Context) (*v1.VolumeRestore, error) {
	vrSel := &client.ListOptions{Namespace: f.ns, FieldSelector: fields.OneTermEqualSelector("metadata.name", f.name)}
	pvrSel := &client.ListOptions{Namespace: f.ns, LabelSelector: labels.SelectorFromSet(labels.Set{v1.LabelRestore: identity.LabelValue(f.name)})}
	for {
		var vrs v1.VolumeRestoreList
		if err := f.kube.List(ctx, &vrs, vrSel); err != nil {
			return f.vr, fmt.Errorf("reading VolumeRestore %s: %w", f.name, err)
		}
		if len(vrs.Items) == 0 {
			return f.vr, errRestoreDeleted
		}
		var pvrs v1.PodVolumeRestoreList
		if err := f.kube.List(ctx, &pvrs, pvrSel); err != nil {
			return f.vr, fmt.Errorf("reading the PodVolumeRestores of %s: %w", f.name, err)
		}
		f.vr = &vrs.Items[0]
		f.pvrs = map[string]*v1.PodVolumeRestore{}
		for i := range pvrs.Items {
			f.pvrs[pvrs.Items[i].Name] = &pvrs.Items[i]
		}
		if done, err := f.report(); done {
			return f.vr, err
		}
		vrw, err := f.kube.Watch(ctx, &v1.VolumeRestoreList{}, &client.ListOptions{Namespace: f.ns, FieldSelector: vrSel.FieldSelector,
			Raw: &metav1.ListOptions{ResourceVersion: vrs.ResourceVersion}})
		if err != nil {
			return f.vr, fmt.Errorf("watching VolumeRestore %s: %w", f.name, err)
		}
		pvrw, err := f.kube.Watch(ctx, &v1.PodVolumeRestoreList{}, &client.ListOptions{Namespace: f.ns, LabelSelector: pvrSel.LabelSelector,
			Raw: &metav1.ListOptions{ResourceVersion: pvrs.ResourceVersion}})
		if err != nil {
			vrw.Stop()
			return f.vr, fmt.Errorf("watching the PodVolumeRestores of %s: %w", f.name, err)
		}
		done, err := f.watch(ctx, vrw, pvrw)
		vrw.Stop()
		pvrw.Stop()
		if done {
			return f.vr, err
		}
		// A watch ended (the API server's timeout): list and watch again.
	}
}

func (f *restoreFollower) watch(ctx context.Context, vrw, pvrw watch.Interface) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("following VolumeRestore %s: %w; it goes on (kubectl describe vr -n %s %s)", f.name, ctx.Err(), f.ns, f.name)
		case ev, ok := <-vrw.ResultChan():
			if !ok || ev.Type == watch.Error {
				return false, nil
			}
			if ev.Type == watch.Deleted {
				return true, errRestoreDeleted
			}
			if vr, ok := ev.Object.(*v1.VolumeRestore); ok {
				f.vr = vr
			}
		case ev, ok := <-pvrw.ResultChan():
			if !ok || ev.Type == watch.Error {
				return false, nil
			}
			pvr, ok := ev.Object.(*v1.PodVolumeRestore)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(f.pvrs, pvr.Name)
			} else {
				f.pvrs[pvr.Name] = pvr
			}
		}
		if done, err := f.report(); done {
			return true, err
		}
	}
}

// report prints what changed and says whether the restore ended; the error is its
// outcome when it did not complete.
func (f *restoreFollower) report() (bool, error) {
	st := &f.vr.Status
	phase := string(st.Phase)
	if phase == "" {
		phase = "Pending"
	}
	msg := conditions.ReadyMessage(st.Conditions)
	if phase != f.phase && !v1.RestorePhase(phase).IsFinal() {
		line := "VolumeRestore " + f.name + ": " + phase
		if msg != "" {
			line += " (" + msg + ")"
		}
		fmt.Fprintln(f.out, line)
		f.phase = phase
	}
	for _, v := range st.Volumes {
		key, line := f.volumeLine(v)
		if f.lines[key] != line {
			fmt.Fprintln(f.out, line)
			f.lines[key] = line
		}
	}
	if !st.Phase.IsFinal() {
		return false, nil
	}
	took := time.Since(f.start).Round(time.Second)
	if st.Phase == v1.RestoreCompleted {
		fmt.Fprintln(f.out, f.summary(took))
		return true, nil
	}
	if msg == "" {
		msg = "no message"
	}
	return true, fmt.Errorf("VolumeRestore %s %s after %s: %s", f.name, st.Phase, took, msg)
}

// volumeLine is one volume's state: its phase, bytes and files restored of the total
// (from its PodVolumeRestore), or why it is skipped.
func (f *restoreFollower) volumeLine(v v1.RestoreVolumeStatus) (string, string) {
	who := "pod " + v.Pod + " volume " + v.Volume
	if v.Claim != "" {
		who = "claim " + v.Claim
		if v.Pod != "" {
			who += " (through pod " + v.Pod + ")"
		}
	}
	key := v.Pod + "/" + v.Volume + "/" + v.Claim
	if v.Claim != "" {
		key = "claim/" + v.Claim
	}
	if v.Reason != "" {
		return key, fmt.Sprintf("  %s: skipped (%s): %s", who, v.Reason, v.Message)
	}
	// The PodVolumeRestore, which the agent updates, is ahead of the restore's
	// status.volumes, which the restore controller copies from it.
	phase, msg := v.Phase, v.Message
	pvr := f.pvrs[v.PodVolumeRestore]
	if pvr != nil && pvr.Status.Phase != "" {
		phase = pvr.Status.Phase
		if msg == "" {
			msg = pvr.Status.Message
		}
	}
	line := "  " + who + ": " + orDash(string(phase))
	if pvr != nil {
		p := pvr.Status.Progress
		switch {
		case phase == v1.RunCompleted:
			line += fmt.Sprintf(", %s, %s", storage.FormatBytes(p.BytesDone), count(int(p.FilesDone), "file"))
		case p.TotalBytes > 0 || p.TotalFiles > 0:
			line += fmt.Sprintf(", %s of %s, %d of %s", storage.FormatBytes(p.BytesDone), storage.FormatBytes(p.TotalBytes), p.FilesDone, count(int(p.TotalFiles), "file"))
		}
	}
	if msg != "" && (phase == v1.RunFailed || phase == v1.RunCanceled) {
		line += ": " + msg
	}
	return key, line
}

// summary is the last line of a Completed restore.
func (f *restoreFollower) summary(took time.Duration) string {
	st := &f.vr.Status
	var what string
	if f.vr.Spec.ClaimSelector != nil {
		what = count(int(st.VolumesCompleted), "claim") + " restored"
	} else {
		pods := map[string]bool{}
		for _, v := range st.Volumes {
			if v.Reason == "" {
				pods[v.Pod] = true
			}
		}
		what = fmt.Sprintf("%s restored into %s", count(int(st.VolumesCompleted), "volume"), count(len(pods), "pod"))
	}
	if st.VolumesSkipped > 0 {
		what += fmt.Sprintf(", %s skipped", count(int(st.VolumesSkipped), "volume"))
	}
	return fmt.Sprintf("VolumeRestore %s Completed: %s in %s", f.name, what, took)
}
