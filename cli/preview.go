package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/coverage"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

type previewOptions struct {
	*options
	files             []string
	kustomize         string
	failOnUnprotect   bool
	operatorNamespace string
	hostPathRoots     hostpath.Roots
}

func newPreview(o *options) *cobra.Command {
	p := &previewOptions{options: o}
	cmd := &cobra.Command{
		Use:   "preview (-f FILE... | -k DIR)",
		Short: "Show which volumes proposed policies select, skip, start and stop protecting",
		Long: `preview evaluates proposed VolumeBackupPolicies against the live cluster with the
controller's selection code: per policy the volumes it would select and skip (with
the reason), then, with the proposed policies replacing the live ones of the same name
(the others stay), which volumes become protected and which protected volumes would no
longer be protected by any policy. The policies are validated as the admission webhook
does. Exit 3 with --fail-on-unprotect when a volume would lose protection.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return p.run(cmd.Context(), cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringArrayVarP(&p.files, "filename", "f", nil, "a file of policy manifests (YAML, several documents), - for stdin; repeatable")
	f.StringVarP(&p.kustomize, "kustomize", "k", "", "a kustomization directory whose output holds the policies")
	f.BoolVar(&p.failOnUnprotect, "fail-on-unprotect", false, "exit 3 when a volume protected now would not be protected by any policy")
	f.StringVar(&p.operatorNamespace, "operator-namespace", "holdfast-system", "Holdfast's namespace, whose own pods coverage does not count (the manager's --namespace)")
	f.Var(rootsFlag{&p.hostPathRoots}, "host-path-roots", "the manager's --host-path-roots, so claims on hostPath PersistentVolumes are judged as runs judge them")
	o.outputFlag(cmd)
	return cmd
}

func (p *previewOptions) run(ctx context.Context, out io.Writer) error {
	if err := p.checkOutput(); err != nil {
		return err
	}
	if len(p.files) == 0 && p.kustomize == "" {
		return usageError("give the proposed policies with -f FILE (- for stdin) or -k DIR")
	}
	proposed, err := p.load()
	if err != nil {
		return err
	}
	c, err := p.kube()
	if err != nil {
		return err
	}
	var live v1.VolumeBackupPolicyList
	if err := c.List(ctx, &live); err != nil {
		return fmt.Errorf("listing VolumeBackupPolicies: %w", err)
	}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return fmt.Errorf("building the CEL engine: %w", err)
	}
	if err := validateProposed(ctx, engine, live.Items, proposed); err != nil {
		return err
	}
	cluster, err := policyctrl.ReadCluster(ctx, c, p.hostPathRoots)
	if err != nil {
		return err
	}
	res := computePreview(engine, previewInput{Cluster: cluster, Live: live.Items, Proposed: proposed, OperatorNamespace: p.operatorNamespace})
	if p.output == "table" {
		printPreview(out, res)
	} else if err := printStructured(out, p.output, res); err != nil {
		return err
	}
	if p.failOnUnprotect && len(res.Unprotected) > 0 {
		return &exitError{code: ExitUnprotect, err: fmt.Errorf("%s would no longer be protected by any policy", count(len(res.Unprotected), "volume"))}
	}
	return nil
}

// load reads the VolumeBackupPolicies of the -f files and the -k directory; other
// kinds are ignored.
func (p *previewOptions) load() ([]v1.VolumeBackupPolicy, error) {
	var docs [][]byte
	for _, f := range p.files {
		var b []byte
		var err error
		if f == "-" {
			b, err = io.ReadAll(p.stdin)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		docs = append(docs, b)
	}
	if p.kustomize != "" {
		resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), p.kustomize)
		if err != nil {
			return nil, fmt.Errorf("building kustomization %s: %w", p.kustomize, err)
		}
		b, err := resMap.AsYaml()
		if err != nil {
			return nil, fmt.Errorf("building kustomization %s: %w", p.kustomize, err)
		}
		docs = append(docs, b)
	}
	var out []v1.VolumeBackupPolicy
	seen := map[string]bool{}
	for _, b := range docs {
		policies, err := policiesOf(b)
		if err != nil {
			return nil, err
		}
		for _, pol := range policies {
			if seen[pol.Name] {
				return nil, fmt.Errorf("VolumeBackupPolicy %s is given twice", pol.Name)
			}
			seen[pol.Name] = true
			out = append(out, pol)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the input holds no VolumeBackupPolicy (apiVersion " + v1.GroupVersion.String() + ")")
	}
	return out, nil
}

// policiesOf decodes the VolumeBackupPolicies of a YAML stream of documents.
func policiesOf(b []byte) ([]v1.VolumeBackupPolicy, error) {
	dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []v1.VolumeBackupPolicy
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the manifests: %w", err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("reading the manifests: %w", err)
		}
		if tm.APIVersion != v1.GroupVersion.String() || tm.Kind != "VolumeBackupPolicy" {
			continue
		}
		var pol v1.VolumeBackupPolicy
		if err := yaml.UnmarshalStrict(doc, &pol); err != nil {
			return nil, fmt.Errorf("reading a VolumeBackupPolicy: %w", err)
		}
		if pol.Name == "" {
			return nil, errors.New("a VolumeBackupPolicy has no metadata.name")
		}
		out = append(out, pol)
	}
}

// validateProposed validates each proposed policy as the admission webhook would: as
// an update of the live policy of its name, else as a creation.
func validateProposed(ctx context.Context, engine *celpolicy.Engine, live, proposed []v1.VolumeBackupPolicy) error {
	byName := map[string]*v1.VolumeBackupPolicy{}
	for i := range live {
		byName[live[i].Name] = &live[i]
	}
	validator := &policyctrl.VolumeBackupPolicyValidator{Engine: engine}
	var errs []error
	for i := range proposed {
		p := &proposed[i]
		var err error
		if old := byName[p.Name]; old != nil {
			_, err = validator.ValidateUpdate(ctx, old, p)
		} else {
			_, err = validator.ValidateCreate(ctx, p)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// previewInput is what one preview reads.
type previewInput struct {
	Cluster           *policyctrl.Cluster
	Live, Proposed    []v1.VolumeBackupPolicy
	OperatorNamespace string
}

// PreviewResult is what preview prints (and -o json/yaml writes).
type PreviewResult struct {
	Policies []PolicyPreview `json:"policies"`
	// Protected are the volumes not protected now that the proposed policies protect.
	Protected []ProtectionChange `json:"protected"`
	// Unprotected are the volumes protected now that no policy would protect.
	Unprotected []ProtectionChange `json:"unprotected"`
}

// PolicyPreview is one proposed policy's selection.
type PolicyPreview struct {
	Name string `json:"name"`
	// Change is Created (no live policy of this name), Changed (its selector,
	// claimsWithoutPods, suspend or coverage exclusion differ from the live one's) or
	// SelectionUnchanged.
	Change    string          `json:"change"`
	Suspended bool            `json:"suspended,omitempty"`
	Selected  []PreviewVolume `json:"selected"`
	Skipped   []PreviewVolume `json:"skipped"`
}

// PreviewVolume is a volume a policy picks: <namespace>/<pod>/<volume>, or the claim
// of a claim no pod uses.
type PreviewVolume struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod,omitempty"`
	Volume    string `json:"volume"`
	Claim     string `json:"claim,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// ProtectionChange is a volume (a source: a claim, or a pod volume counted once for
// all replicas) whose coverage changes.
type ProtectionChange struct {
	Namespace string `json:"namespace"`
	Source    string `json:"source"`
	Claim     string `json:"claim,omitempty"`
	Volume    string `json:"volume"`
	Pod       string `json:"pod,omitempty"`
	// Before and After are coverage states (Protected, Skipped, Excluded,
	// Unprotected) and the policy that gives them.
	Before       string `json:"before"`
	BeforePolicy string `json:"beforePolicy,omitempty"`
	After        string `json:"after"`
	AfterPolicy  string `json:"afterPolicy,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

// computePreview selects with each proposed policy and diffs the coverage of the live
// policies against the live ones with the proposed ones in place. It is pure: the
// benchmark runs it on 10,000 pods.
func computePreview(engine *celpolicy.Engine, in previewInput) *PreviewResult {
	liveByName := map[string]*v1.VolumeBackupPolicy{}
	var before []coverage.Policy
	for i := range in.Live {
		p := &in.Live[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		liveByName[p.Name] = p
		before = append(before, coverage.CompilePolicy(engine, p))
	}
	replaced := map[string]bool{}
	res := &PreviewResult{Policies: []PolicyPreview{}, Protected: []ProtectionChange{}, Unprotected: []ProtectionChange{}}
	var after []coverage.Policy
	for i := range in.Proposed {
		p := &in.Proposed[i]
		replaced[p.Name] = true
		compiled := coverage.CompilePolicy(engine, p)
		after = append(after, compiled)
		pp := PolicyPreview{Name: p.Name, Change: "Created", Suspended: p.Spec.Suspend, Selected: []PreviewVolume{}, Skipped: []PreviewVolume{}}
		if old := liveByName[p.Name]; old != nil {
			pp.Change = "Changed"
			if sameSelection(old, p) {
				pp.Change = "SelectionUnchanged"
			}
		}
		if compiled.Selector != nil {
			add := func(v PreviewVolume) {
				if v.Reason == "" {
					pp.Selected = append(pp.Selected, v)
				} else {
					pp.Skipped = append(pp.Skipped, v)
				}
			}
			policyctrl.SelectVolumes(compiled.Selector, in.Cluster, 0, p.Spec.ClaimsWithoutPods,
				func(pod *corev1.Pod, vol *corev1.Volume, skip string) {
					v := PreviewVolume{Namespace: pod.Namespace, Pod: pod.Name, Volume: vol.Name, Reason: skip}
					if vol.PersistentVolumeClaim != nil {
						v.Claim = vol.PersistentVolumeClaim.ClaimName
					}
					add(v)
				},
				func(pvc *corev1.PersistentVolumeClaim, skip string) {
					add(PreviewVolume{Namespace: pvc.Namespace, Volume: pvc.Name, Claim: pvc.Name, Reason: skip})
				})
		}
		res.Policies = append(res.Policies, pp)
	}
	for _, p := range before {
		if !replaced[p.Name] {
			after = append(after, p)
		}
	}
	// The two computations read the cluster and compiled programs only: they run at
	// once (a preview of 10,000 pods is CEL-bound; BenchmarkPreview10000Pods).
	var was, will *coverage.Result
	var wg sync.WaitGroup
	wg.Go(func() {
		was = coverage.Compute(coverage.Input{Cluster: in.Cluster, Policies: before, OperatorNamespace: in.OperatorNamespace})
	})
	will = coverage.Compute(coverage.Input{Cluster: in.Cluster, Policies: after, OperatorNamespace: in.OperatorNamespace})
	wg.Wait()
	wasBySource := make(map[string]*coverage.Volume, len(was.Volumes))
	for i := range was.Volumes {
		v := &was.Volumes[i]
		wasBySource[v.Namespace+v.Source] = v
	}
	for i := range will.Volumes {
		v := &will.Volumes[i]
		old := wasBySource[v.Namespace+v.Source]
		oldState, oldPolicy := v1.CoverageUnprotected, ""
		if old != nil {
			oldState, oldPolicy = old.State, old.Policy
		}
		if (oldState == v1.CoverageProtected) == (v.State == v1.CoverageProtected) {
			continue
		}
		ch := ProtectionChange{Namespace: v.Namespace, Source: v.Source, Claim: v.Claim, Volume: v.Name, Pod: v.Pod,
			Before: oldState, BeforePolicy: oldPolicy, After: v.State, AfterPolicy: v.Policy, Reason: v.Reason}
		if v.State == v1.CoverageProtected {
			res.Protected = append(res.Protected, ch)
		} else {
			res.Unprotected = append(res.Unprotected, ch)
		}
	}
	sort.Slice(res.Policies, func(i, j int) bool { return res.Policies[i].Name < res.Policies[j].Name })
	return res
}

// sameSelection says whether a proposed policy selects, skips and excludes as the live
// one does: the same selector, claimsWithoutPods (empty is the default, Backup),
// suspend and coverage exclusion. Other fields (schedule, retention, ...) change what a
// run does, not which volumes it protects.
func sameSelection(live, proposed *v1.VolumeBackupPolicy) bool {
	claims := func(p *v1.VolumeBackupPolicy) v1.ClaimsWithoutPods {
		if p.Spec.ClaimsWithoutPods == "" {
			return v1.ClaimsWithoutPodsBackup
		}
		return p.Spec.ClaimsWithoutPods
	}
	exclude := func(p *v1.VolumeBackupPolicy) string {
		if p.Spec.Coverage == nil {
			return ""
		}
		return p.Spec.Coverage.Exclude
	}
	return live.Spec.Selector == proposed.Spec.Selector && claims(live) == claims(proposed) &&
		live.Spec.Suspend == proposed.Spec.Suspend && exclude(live) == exclude(proposed)
}

func printPreview(w io.Writer, res *PreviewResult) {
	for _, p := range res.Policies {
		state := ""
		if p.Suspended {
			state = ", suspended: what it selects is Skipped as Suspended"
		}
		fmt.Fprintf(w, "VolumeBackupPolicy %s (%s%s): selects %s, skips %d\n", p.Name, p.Change, state, count(len(p.Selected), "volume"), len(p.Skipped))
		if len(p.Selected)+len(p.Skipped) == 0 {
			fmt.Fprintln(w)
			continue
		}
		t := newTable(w)
		fmt.Fprintln(t, "  NAMESPACE\tPOD\tVOLUME\tCLAIM\tSELECTED")
		for _, v := range p.Selected {
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\tyes\n", v.Namespace, orDash(v.Pod), v.Volume, orDash(v.Claim))
		}
		for _, v := range p.Skipped {
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\tskipped: %s\n", v.Namespace, orDash(v.Pod), v.Volume, orDash(v.Claim), v.Reason)
		}
		t.Flush()
		fmt.Fprintln(w)
	}
	printChanges(w, "Become protected", res.Protected)
	printChanges(w, "Stop being protected by any policy", res.Unprotected)
}

func printChanges(w io.Writer, title string, changes []ProtectionChange) {
	if len(changes) == 0 {
		fmt.Fprintf(w, "%s: none\n", title)
		return
	}
	fmt.Fprintf(w, "%s: %d\n", title, len(changes))
	t := newTable(w)
	fmt.Fprintln(t, "  NAMESPACE\tSOURCE\tCLAIM\tPOD\tBEFORE\tAFTER")
	for _, c := range changes {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\n", c.Namespace, c.Source, orDash(c.Claim), orDash(c.Pod),
			withPolicy(c.Before, c.BeforePolicy, ""), withPolicy(c.After, c.AfterPolicy, c.Reason))
	}
	t.Flush()
}

func withPolicy(state, policy, reason string) string {
	if reason != "" {
		state += " " + reason
	}
	if policy != "" {
		state += " (" + policy + ")"
	}
	return state
}

// rootsFlag is hostpath.Roots as a pflag value.
type rootsFlag struct{ *hostpath.Roots }

func (rootsFlag) Type() string { return "dirs" }
