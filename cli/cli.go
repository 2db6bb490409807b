package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// PluginName is the basename under which the holdfast binary acts as the kubectl
// plugin (kubectl finds kubectl-holdfast on PATH and runs it for kubectl holdfast).
const PluginName = "kubectl-holdfast"

// Exit codes, for CI jobs (docs/cli.md).
const (
	ExitOK = 0
	// ExitError: the command failed (an API error, an invalid policy, a run that did
	// not succeed).
	ExitError = 1
	// ExitUsage: unknown command or flag, missing or extra arguments.
	ExitUsage = 2
	// ExitUnprotect: preview --fail-on-unprotect found volumes that would lose
	// protection.
	ExitUnprotect = 3
)

// exitError carries an exit code other than ExitError.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// Main runs kubectl holdfast with args (without the program name) and returns the exit
// code. name is how the command calls itself in help and errors.
func Main(name string, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return execute(ctx, newRoot(name, os.Stdin), args, stdout, stderr)
}

// runWithInput is Main for tests: stdin given, no signal handling.
func runWithInput(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return execute(ctx, newRoot("kubectl holdfast", stdin), args, stdout, stderr)
}

func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsage(err) {
		return ExitUsage
	}
	return ExitError
}

// usageFailure marks errors cobra gives for a wrong command line.
type usageFailure struct{ error }

func isUsage(err error) bool {
	var u usageFailure
	return errors.As(err, &u)
}

// options are the flags every command shares, as kubectl has them.
type options struct {
	stdin         io.Reader
	kubeconfig    string
	context       string
	namespace     string
	allNamespaces bool
	output        string
	client        client.WithWatch
}

func newRoot(name string, stdin io.Reader) *cobra.Command {
	o := &options{stdin: stdin}
	root := &cobra.Command{
		Use:           "holdfast",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: name},
		Short:         "Preview policies, see coverage, run policies and restore volumes with Holdfast",
		Long:          name + " answers from the API server what Holdfast's policies protect: preview a policy change, list coverage, run a policy now, restore a volume or some of its paths.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageFailure{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&o.context, "context", "", "the kubeconfig context to use")
	root.AddCommand(newPreview(o), newCoverage(o), newRun(o), newRestore(o), newSnapshots(o), newLs(o), newGet(o))
	for _, cmd := range root.Commands() {
		args := cmd.Args
		cmd.Args = func(c *cobra.Command, a []string) error {
			if args == nil {
				return nil
			}
			if err := args(c, a); err != nil {
				return usageFailure{err}
			}
			return nil
		}
	}
	root.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageFailure{fmt.Errorf("unknown command %q for %q", args[0], name)}
		}
		return c.Help()
	}
	root.Args = cobra.ArbitraryArgs
	return root
}

// namespaceFlags adds -n and, for commands that list namespaced things, -A.
func (o *options) namespaceFlags(cmd *cobra.Command, all bool) {
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "the namespace (default the kubeconfig context's)")
	if all {
		cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list every namespace")
	}
}

// outputFlag adds -o table|yaml|json.
func (o *options) outputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table, yaml or json")
}

func (o *options) checkOutput() error {
	switch o.output {
	case "table", "yaml", "json":
		return nil
	}
	return usageError("--output must be table, yaml or json, not %q", o.output)
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1.AddToScheme(s))
	return s
}

// clientConfig loads the kubeconfig as kubectl does: --kubeconfig, else $KUBECONFIG,
// else ~/.kube/config, with --context and -n over it.
func (o *options) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	overrides.Context.Namespace = o.namespace
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
}

// kube returns the client to the API server.
func (o *options) kube() (client.WithWatch, error) {
	if o.client != nil {
		return o.client, nil
	}
	cfg, err := o.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	o.client = c
	return c, nil
}

// targetNamespace is the namespace a listing covers: "" with -A, else -n, else the
// context's namespace, else default.
func (o *options) targetNamespace() (string, error) {
	if o.allNamespaces {
		return "", nil
	}
	if o.namespace != "" {
		return o.namespace, nil
	}
	ns, _, err := o.clientConfig().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the namespace of the kubeconfig context: %w", err)
	}
	return ns, nil
}
