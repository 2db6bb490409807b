// Command holdfast-bench runs `make bench`: Holdfast's data path beside the kopia and
// restic CLIs on generated data sets, plus the machine's raw limits. It prints the
// tables, writes them and the SVG charts into -out, and removes every temporary file
// it made, also when it fails or is interrupted.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/bench"
	"github.com/holdfast-dev/holdfast/test/bench/controlplane"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == bench.MeasureFlag {
		os.Exit(bench.MeasureMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == controlplane.ManagerFlag {
		os.Exit(controlplane.ManagerMain(os.Args[2:]))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	sets := flag.String("sets", "small,large,mixed", "data sets to measure: small, large, mixed, many (2,000,000 small files), db (one 10 GiB file changed in a few pages); name@scale gives a set a scale of its own, e.g. many@0.1")
	tools := flag.String("tools", "holdfast,kopia,restic", "what to measure: holdfast (kopia data path), holdfast-restic, kopia, restic")
	repeat := flag.Int("repeat", 3, "repetitions of every measurement (the report gives the median)")
	scale := flag.Float64("scale", 1, "shrink the data sets (0.01 for a smoke test)")
	toolsBin := flag.String("tools-bin", "bin/tools", "directory with the kopia and restic binaries")
	tmp := flag.String("tmp", os.TempDir(), "where data sets and repositories go (needs about 3 × the largest data set)")
	restoreDir := flag.String("restore-dir", "", "where restored trees go, each removed once checked (empty: under -tmp, kept until the repetition ends); mount a tmpfs there so that no restore pays for inodes freed before it")
	out := flag.String("out", "", "directory for results.md, results.json and the SVG charts (empty: print only)")
	limits := flag.Bool("limits", true, "also measure the kopia algorithms in-process")
	dropCaches := flag.Bool("drop-caches", false, "empty the page cache (and dentry and inode caches) before every measured run (needs root)")
	controlPlane := flag.Bool("control-plane", false, "measure the policy controller against envtest instead of the data path")
	cpNamespaces := flag.Int("cp-namespaces", 1000, "control plane: namespaces")
	cpPods := flag.Int("cp-pods-per-namespace", 10, "control plane: pods per namespace")
	cpPolicies := flag.Int("cp-policies", 20, "control plane: policies (each selects namespaces/policies namespaces)")
	cpBareWorkers := flag.Int("cp-bare-workers", 16, "control plane: concurrent creates of the parallel bare-client baseline")
	cpProfile := flag.String("cp-profile", "", "control plane: directory for CPU profiles of the manager and API server per run and heap profiles of the manager (empty: none)")
	cpWorkers := flag.Int("cp-manager-workers", 0, "control plane: policies the manager reconciles at once (0: as holdfast manager, one); an experiment")
	cpPollList := flag.Bool("cp-poll-list", false, "control plane: notice a run's end by listing every PodVolumeBackup every 250 ms (the bench before 2026-12) instead of asking the manager")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *controlPlane {
		return runControlPlane(ctx, controlplane.Options{Namespaces: *cpNamespaces, PodsPerNamespace: *cpPods, Policies: *cpPolicies, Log: os.Stderr,
			BareWorkers: *cpBareWorkers, ProfileDir: *cpProfile, PollList: *cpPollList, ManagerWorkers: *cpWorkers}, *out)
	}

	if *dropCaches {
		if err := bench.DropCaches(); err != nil {
			return fmt.Errorf("%w (run as root, or leave -drop-caches off)", err)
		}
	}
	work, err := os.MkdirTemp(*tmp, "holdfast-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// The data mover is the real binary, built as `make build` builds it.
	binary := filepath.Join(work, "holdfast")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building holdfast: %w", err)
	}
	// The agent keeps each job's work directory (kopia config and caches) in a
	// memory-backed volume; so does the bench, where the machine has a tmpfs.
	jobDir := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		jobDir = "/dev/shm"
	}
	bin, err := filepath.Abs(*toolsBin)
	if err != nil {
		return err
	}
	var chosen []bench.Tool
	var names []string
	for _, name := range strings.Split(*tools, ",") {
		switch name {
		case "holdfast":
			chosen = append(chosen, &bench.Holdfast{Binary: binary, JobDir: jobDir})
		case "holdfast-restic":
			chosen = append(chosen, &bench.Holdfast{Binary: binary, JobDir: jobDir, Uploader: v1.UploaderRestic, ResticPath: filepath.Join(bin, "restic")})
		case "kopia":
			chosen = append(chosen, &bench.KopiaCLI{Binary: filepath.Join(bin, "kopia")})
		case "restic":
			chosen = append(chosen, &bench.ResticCLI{Binary: filepath.Join(bin, "restic")})
		default:
			return fmt.Errorf("unknown tool %q", name)
		}
		names = append(names, name)
	}

	report := &strings.Builder{}
	fmt.Fprintf(report, "Measured %s with `%s`.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), command())
	fmt.Fprintf(report, "Machine: %s\n\n", machine())

	var alg *bench.AlgorithmLimits
	if *limits {
		dir := *tmp
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			dir = "/dev/shm"
		}
		d, err := os.MkdirTemp(dir, "holdfast-bench-kopia-")
		if err != nil {
			return err
		}
		a, err := bench.MeasureAlgorithms(ctx, d, 512<<20)
		os.RemoveAll(d)
		if err != nil {
			return err
		}
		alg = &a
		fmt.Fprintf(report, "kopia format %s + %s, splitter %s (kopia library, in-process, 512 MiB of random data):\n"+
			"object writer (split + hash + encrypt + pack, no storage I/O) %s with one writer, %s with %d writers; splitter alone %s.\n\n",
			a.Hash, a.Cipher, a.Splitter, a.Pipeline, a.PipelineParallel, runtime.NumCPU(), a.Split)
		fmt.Fprint(os.Stderr, report.String())
	}

	results, err := bench.Run(ctx, bench.Options{
		Sets: strings.Split(*sets, ","), Tools: chosen, Repeat: *repeat, Scale: bench.Scale(*scale),
		TempDir: work, RestoreDir: *restoreDir, ChangeFraction: 0.05, DropCaches: *dropCaches, Log: os.Stderr,
	})
	if err != nil {
		return err
	}
	report.WriteString(bench.Markdown(results, names, *repeat))
	fmt.Print(report.String())
	if *out == "" {
		return nil
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	// One file per data set, so data sets can be measured by separate invocations.
	header := fmt.Sprintf("Measured %s with `%s`.\n\nMachine: %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), command(), machine())
	if alg != nil {
		limits := header + report.String()[strings.Index(report.String(), "kopia format"):strings.Index(report.String(), "####")]
		if err := os.WriteFile(filepath.Join(*out, "limits.md"), []byte(limits), 0o644); err != nil {
			return err
		}
	}
	for _, r := range results {
		md := header + bench.Markdown([]bench.SetResult{r}, names, *repeat)
		if err := os.WriteFile(filepath.Join(*out, r.Set+".md"), []byte(md), 0o644); err != nil {
			return err
		}
		raw, err := json.MarshalIndent(struct {
			Command    string
			Machine    string
			Algorithms *bench.AlgorithmLimits `json:",omitempty"`
			Result     bench.SetResult
		}{command(), machine(), alg, r}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*out, r.Set+".json"), raw, 0o644); err != nil {
			return err
		}
	}
	files, err := bench.Charts(*out, results, names)
	fmt.Fprintf(os.Stderr, "wrote %d data set reports and %d charts to %s\n", len(results), len(files), *out)
	return err
}

// machine describes the host in one line: CPUs, memory, kernel and the disk of /tmp.
func machine() string {
	sh := func(script string) string {
		out, err := exec.Command("sh", "-c", script).Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%d CPUs (%s), %s memory, Linux %s, %s; Go %s",
		runtime.NumCPU(),
		sh(`grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'`),
		sh(`free -h | awk '/Mem:/ {print $2}'`),
		sh(`uname -r`),
		sh(`df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1 " (" $2 ", " $5 " used)"}'`),
		runtime.Version())
}

func runControlPlane(ctx context.Context, opts controlplane.Options, out string) error {
	res, err := controlplane.Run(ctx, opts)
	if err != nil {
		return err
	}
	report := fmt.Sprintf("Measured %s with `%s`.\n\nMachine: %s\n\n%s", time.Now().UTC().Format("2006-01-02 15:04 MST"),
		command(), machine(), controlplane.Markdown(res))
	fmt.Print(report)
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "controlplane.json"), raw, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "controlplane.md"), []byte(report), 0o644)
}

// command is how this run was invoked, without the temporary path of `go run`.
func command() string {
	return strings.Join(append([]string{"holdfast-bench"}, os.Args[1:]...), " ")
}
