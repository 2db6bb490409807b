package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/coverage"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
	"github.com/holdfast-dev/holdfast/internal/hostpath"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
)

type coverageOptions struct {
	*options
	unprotectedOnly   bool
	operatorNamespace string
	hostPathRoots     hostpath.Roots
}

func newCoverage(o *options) *cobra.Command {
	c := &coverageOptions{options: o}
	cmd := &cobra.Command{
		Use:   "coverage",
		Short: "List every claim and pod volume: protected by which policy, skipped why, excluded or unprotected",
		Long: `coverage lists every claim and every pod volume that holds data, once per source
(a claim however many pods mount it, a Deployment's emptyDir once for its replicas),
with its state: Protected (by which policy, and the last backup that completed),
Skipped (why a run would skip it), Excluded (by which policy's spec.coverage.exclude)
or Unprotected. The states are computed with the manager's own coverage code from the
live policies; the VolumeCoverage named cluster (the manager's bounded summary) is
printed beside them so both can be compared.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.run(cmd.Context(), cmd.OutOrStdout()) },
	}
	o.namespaceFlags(cmd, true)
	o.outputFlag(cmd)
	cmd.Flags().BoolVar(&c.unprotectedOnly, "unprotected-only", false, "list only the unprotected volumes")
	cmd.Flags().StringVar(&c.operatorNamespace, "operator-namespace", "holdfast-system", "Holdfast's namespace, whose own pods are not counted (the manager's --namespace)")
	cmd.Flags().Var(rootsFlag{&c.hostPathRoots}, "host-path-roots", "the manager's --host-path-roots, so claims on hostPath PersistentVolumes are judged as runs judge them")
	return cmd
}

// CoverageResult is what coverage prints (and -o json/yaml writes).
type CoverageResult struct {
	// Summary is the status of the VolumeCoverage named cluster, absent when the
	// manager has not made it.
	Summary *CoverageSummary `json:"summary,omitempty"`
	Volumes []CoverageVolume `json:"volumes"`
}

// CoverageSummary is the manager's VolumeCoverage, as counts.
type CoverageSummary struct {
	Computed    *time.Time `json:"computed,omitempty"`
	Protected   int32      `json:"protected"`
	Skipped     int32      `json:"skipped"`
	Excluded    int32      `json:"excluded"`
	Unprotected int32      `json:"unprotected"`
}

// CoverageVolume is one source's coverage.
type CoverageVolume struct {
	Namespace string `json:"namespace"`
	Source    string `json:"source"`
	Claim     string `json:"claim,omitempty"`
	Volume    string `json:"volume"`
	Type      string `json:"type"`
	Pod       string `json:"pod,omitempty"`
	State     string `json:"state"`
	Policy    string `json:"policy,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// LastSuccess is when the newest Completed backup of the source completed.
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
}

func (c *coverageOptions) run(ctx context.Context, out io.Writer) error {
	if err := c.checkOutput(); err != nil {
		return err
	}
	kube, err := c.kube()
	if err != nil {
		return err
	}
	ns, err := c.targetNamespace()
	if err != nil {
		return err
	}
	res, err := c.compute(ctx, kube, ns)
	if err != nil {
		return err
	}
	if c.output != "table" {
		return printStructured(out, c.output, res)
	}
	printCoverage(out, res, ns == "")
	return nil
}

func (c *coverageOptions) compute(ctx context.Context, kube client.Reader, ns string) (*CoverageResult, error) {
	res := &CoverageResult{Volumes: []CoverageVolume{}}
	var vc v1.VolumeCoverage
	switch err := kube.Get(ctx, client.ObjectKey{Name: v1.VolumeCoverageName}, &vc); {
	case err == nil:
		s := &CoverageSummary{Protected: vc.Status.Protected, Skipped: vc.Status.Skipped, Excluded: vc.Status.Excluded, Unprotected: vc.Status.Unprotected}
		if vc.Status.LastComputedTime != nil {
			t := vc.Status.LastComputedTime.UTC()
			s.Computed = &t
		}
		res.Summary = s
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("getting VolumeCoverage %s: %w", v1.VolumeCoverageName, err)
	}
	cluster, err := policyctrl.ReadCluster(ctx, kube, c.hostPathRoots)
	if err != nil {
		return nil, err
	}
	var list v1.VolumeBackupPolicyList
	if err := kube.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing VolumeBackupPolicies: %w", err)
	}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return nil, fmt.Errorf("building the CEL engine: %w", err)
	}
	var policies []coverage.Policy
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			policies = append(policies, coverage.CompilePolicy(engine, &list.Items[i]))
		}
	}
	computed := coverage.Compute(coverage.Input{Cluster: cluster, Policies: policies, OperatorNamespace: c.operatorNamespace})
	var pvbs v1.PodVolumeBackupList
	if err := kube.List(ctx, &pvbs, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing PodVolumeBackups: %w", err)
	}
	last := map[string]time.Time{}
	for _, b := range pvbs.Items {
		if b.Status.Phase != v1.RunCompleted || b.Status.CompletionTime == nil {
			continue
		}
		key := b.Namespace + b.Spec.SourcePath
		if t := b.Status.CompletionTime.UTC(); t.After(last[key]) {
			last[key] = t
		}
	}
	for _, v := range computed.Volumes {
		if (ns != "" && v.Namespace != ns) || (c.unprotectedOnly && v.State != v1.CoverageUnprotected) {
			continue
		}
		cv := CoverageVolume{Namespace: v.Namespace, Source: v.Source, Claim: v.Claim, Volume: v.Name, Type: v.Type, Pod: v.Pod,
			State: v.State, Policy: v.Policy, Reason: v.Reason}
		if t, ok := last[v.Namespace+v.Source]; ok {
			cv.LastSuccess = &t
		}
		res.Volumes = append(res.Volumes, cv)
	}
	return res, nil
}

func printCoverage(w io.Writer, res *CoverageResult, allNamespaces bool) {
	t := newTable(w)
	if allNamespaces {
		fmt.Fprint(t, "NAMESPACE\t")
	}
	fmt.Fprintln(t, "SOURCE\tCLAIM\tVOLUME\tTYPE\tPOD\tSTATE\tPOLICY\tREASON\tLAST SUCCESS")
	for _, v := range res.Volumes {
		if allNamespaces {
			fmt.Fprintf(t, "%s\t", v.Namespace)
		}
		success := "-"
		if v.LastSuccess != nil {
			success = v.LastSuccess.Format(time.RFC3339)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Source, orDash(v.Claim), v.Volume, v.Type, orDash(v.Pod), v.State,
			orDash(v.Policy), orDash(v.Reason), success)
	}
	t.Flush()
	if len(res.Volumes) == 0 {
		fmt.Fprintln(w, "No volumes.")
	}
	if s := res.Summary; s != nil {
		when := "not computed yet"
		if s.Computed != nil {
			when = "computed " + s.Computed.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "\nVolumeCoverage cluster (all namespaces, %s): %d protected, %d skipped, %d excluded, %d unprotected\n",
			when, s.Protected, s.Skipped, s.Excluded, s.Unprotected)
	} else {
		fmt.Fprintln(w, "\nVolumeCoverage cluster: not found (is the manager running?)")
	}
}
