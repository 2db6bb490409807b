package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	policyctrl "github.com/holdfast-dev/holdfast/controllers/policy"
)

type runOptions struct {
	*options
	noWait  bool
	timeout time.Duration
	// token is the run-now value; the time when empty (tests set it).
	token string
}

func newRun(o *options) *cobra.Command {
	r := &runOptions{options: o}
	cmd := &cobra.Command{
		Use:   "run POLICY",
		Short: "Start a run of a policy now and follow it to its end",
		Long: `run sets the run-now annotation (` + v1.AnnotationRunNow + `) of the VolumeBackupPolicy to
a new value, which starts one run, and follows the run (status.lastRun) until it ends,
printing its progress. Exit 0 when the run Succeeded, 1 otherwise with the run's message.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return r.run(cmd.Context(), cmd.OutOrStdout(), args[0]) },
	}
	cmd.Flags().BoolVar(&r.noWait, "no-wait", false, "set the annotation and return without following the run")
	cmd.Flags().DurationVar(&r.timeout, "timeout", 0, "give up following the run after this long, exit 1 (0: no limit)")
	return cmd
}

func (r *runOptions) run(ctx context.Context, out io.Writer, name string) error {
	kube, err := r.kube()
	if err != nil {
		return err
	}
	var p v1.VolumeBackupPolicy
	if err := kube.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
		return fmt.Errorf("getting VolumeBackupPolicy %s: %w", name, err)
	}
	if p.Spec.Suspend {
		return fmt.Errorf("VolumeBackupPolicy %s is suspended (spec.suspend): it starts no run", name)
	}
	token := r.token
	if token == "" {
		token = time.Now().UTC().Format("20060102T150405.000000000Z")
	}
	base := p.DeepCopy()
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[v1.AnnotationRunNow] = token
	if err := kube.Patch(ctx, &p, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("setting %s on VolumeBackupPolicy %s: %w", v1.AnnotationRunNow, name, err)
	}
	fmt.Fprintf(out, "VolumeBackupPolicy %s: %s=%s\n", name, v1.AnnotationRunNow, token)
	if r.noWait {
		return nil
	}
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	return follow(ctx, kube, out, name, token)
}

// errRunNotStarted: the policy consumed the token without starting a run.
var errRunNotStarted = errors.New("the policy took the run-now token but started no run (suspended meanwhile?)")

// follow watches the policy until the run its token started ends, printing progress
// on every change of the run's counts.
func follow(ctx context.Context, kube client.WithWatch, out io.Writer, name, token string) error {
	suffix := policyctrl.RunNowSuffix(token)
	last := ""
	for {
		var list v1.VolumeBackupPolicyList
		if err := kube.List(ctx, &list, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)}); err != nil {
			return fmt.Errorf("reading VolumeBackupPolicy %s: %w", name, err)
		}
		if len(list.Items) == 0 {
			return fmt.Errorf("VolumeBackupPolicy %s was deleted", name)
		}
		done, err := report(out, &list.Items[0], token, suffix, &last)
		if done || err != nil {
			return err
		}
		w, err := kube.Watch(ctx, &v1.VolumeBackupPolicyList{}, &client.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", name),
			Raw:           &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			return fmt.Errorf("watching VolumeBackupPolicy %s: %w", name, err)
		}
		done, err = watchRun(ctx, w, out, token, suffix, &last)
		w.Stop()
		if done || err != nil {
			return err
		}
		// The watch ended (a timeout of the API server): list and watch again.
	}
}

func watchRun(ctx context.Context, w watch.Interface, out io.Writer, token, suffix string, last *string) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("following the run: %w", ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return false, errors.New("the VolumeBackupPolicy was deleted")
			case watch.Error:
				return false, nil
			}
			p, ok := ev.Object.(*v1.VolumeBackupPolicy)
			if !ok {
				continue
			}
			if done, err := report(out, p, token, suffix, last); done || err != nil {
				return done, err
			}
		}
	}
}

// report prints the run's progress when it changed and says whether the run ended;
// the error is the run's outcome when it is not Succeeded.
func report(out io.Writer, p *v1.VolumeBackupPolicy, token, suffix string, last *string) (bool, error) {
	st := &p.Status
	if st.LastRunNowToken != token {
		return false, nil // not handled yet
	}
	run := st.LastRun
	if run == nil || !strings.HasSuffix(run.Name, suffix) {
		return true, errRunNotStarted
	}
	line := fmt.Sprintf("run %s: %s, %d/%d volumes completed, %d failed, %d skipped", run.Name, orDash(string(run.Outcome)),
		run.VolumesCompleted, run.VolumesSelected, run.VolumesFailed, run.VolumesSkipped)
	if line != *last {
		fmt.Fprintln(out, line)
		*last = line
	}
	switch run.Outcome {
	case "", v1.RunOutcomeInProgress:
		return false, nil
	case v1.RunOutcomeSucceeded:
		return true, nil
	}
	msg := run.Message
	if msg == "" {
		msg = "no message"
	}
	return true, fmt.Errorf("run %s %s: %s", run.Name, run.Outcome, msg)
}
