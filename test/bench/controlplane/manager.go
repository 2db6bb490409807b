package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/holdfast-dev/holdfast/controllers/policy"
	celpolicy "github.com/holdfast-dev/holdfast/policy"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// ManagerFlag, as the first argument of the bench binary, makes it the manager
// process of the control-plane bench (ManagerMain): the policy controller runs in a
// process of its own, so that its memory and CPU are its own, not the bench client's.
const ManagerFlag = "-control-plane-manager"

// managerState is what the manager process reports on each command.
type managerState struct {
	Err string `json:",omitempty"`
	// Requests the manager sent since it started, by verb and resource, and the
	// PodVolumeBackups the API server created for it.
	Requests       map[string]int64
	CreatedBackups int64
	// CPU is the process's user+system time since it started.
	CPU time.Duration
	// RSS and PeakRSS are the process's resident set now and at its peak (VmRSS,
	// VmHWM); PeakHeap is the most heap in objects (live and not yet swept) seen by a
	// sampler every 100 ms; HeapAfterGC is the heap in use right after a GC ("gc" only).
	RSS, PeakRSS          int64
	PeakHeap, HeapAfterGC uint64
}

// ManagerMain runs the policy controller, as `holdfast manager` runs it (policy.Setup
// without the webhook), against the API server of the kubeconfig in args[0] (with
// args[1] reconciles at once when it is above 0, an experiment), and
// answers one JSON line on stdout for each command line on stdin:
//
//	state               requests, CPU, memory
//	gc                  the same after a GC, with HeapAfterGC
//	cpu-start <file>    start a CPU profile
//	cpu-stop            write it
//	heap <file>         write a heap profile (after a GC)
//
// It stops when stdin closes.
func ManagerMain(args []string) int {
	if err := managerMain(args); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-bench manager:", err)
		return 1
	}
	return 0
}

func managerMain(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: %s <kubeconfig> <workers>", ManagerFlag)
	}
	workers, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	cfg, err := clientcmd.BuildConfigFromFlags("", args[0])
	if err != nil {
		return err
	}
	// What ctrl.GetConfig gives `holdfast manager` in a cluster: no client-side rate
	// limit (QPS -1), only the API server's priority and fairness.
	cfg.QPS, cfg.Burst = -1, 0
	count := newCounter()
	cfg.Wrap(count.wrap)
	mopts := ctrl.Options{Scheme: testenv.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: policy.CacheOptions()}
	if workers > 0 {
		// An experiment, not what `holdfast manager` does (one reconcile at a time):
		// policies reconciled concurrently.
		mopts.Controller = config.Controller{MaxConcurrentReconciles: workers}
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return err
	}
	engine, err := celpolicy.NewEngine()
	if err != nil {
		return err
	}
	if err := (&policy.VolumeBackupPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Cache: mgr.GetCache(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var peakHeap atomic.Uint64
	go sampleHeap(ctx, &peakHeap)

	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		st := managerState{}
		switch cmd {
		case "state":
		case "gc":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			st.HeapAfterGC = ms.HeapInuse
		case "cpu-start":
			f, err := os.Create(arg)
			if err == nil {
				err = pprof.StartCPUProfile(f)
				cpuFile = f
			}
			st.Err = errString(err)
		case "cpu-stop":
			pprof.StopCPUProfile()
			if cpuFile != nil {
				st.Err = errString(cpuFile.Close())
				cpuFile = nil
			}
		case "heap":
			runtime.GC()
			f, err := os.Create(arg)
			if err == nil {
				err = pprof.Lookup("heap").WriteTo(f, 0)
				if cErr := f.Close(); err == nil {
					err = cErr
				}
			}
			st.Err = errString(err)
		default:
			st.Err = "unknown command " + cmd
		}
		st.Requests, st.CreatedBackups = count.snapshot()
		st.CPU = processCPU()
		st.RSS, st.PeakRSS = procStatus("VmRSS"), procStatus("VmHWM")
		st.PeakHeap = peakHeap.Load()
		if err := out.Encode(st); err != nil {
			return err
		}
	}
	cancel()
	return <-done
}

var cpuFile *os.File

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func sampleHeap(ctx context.Context, peak *atomic.Uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > peak.Load() {
			peak.Store(v)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus reads a "<field>: <n> kB" line of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

// managerProcess is the bench's handle on the manager process.
type managerProcess struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	mu  sync.Mutex
}

// startManager starts the manager process: this binary again, with ManagerFlag.
// goEnv (KEY=value) is added to its environment.
func startManager(kubeconfig string, workers int, goEnv []string, stderr io.Writer) (*managerProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, ManagerFlag, kubeconfig, strconv.Itoa(workers))
	cmd.Env = append(os.Environ(), goEnv...)
	cmd.Stderr = stderr
	// The manager must not outlive the bench when the bench is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &managerProcess{cmd: cmd, in: in, out: sc}, nil
}

func (m *managerProcess) call(command string) (managerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st managerState
	if _, err := fmt.Fprintln(m.in, command); err != nil {
		return st, fmt.Errorf("manager process: %w", err)
	}
	if !m.out.Scan() {
		return st, fmt.Errorf("manager process ended: %v", m.out.Err())
	}
	if err := json.Unmarshal(m.out.Bytes(), &st); err != nil {
		return st, err
	}
	if st.Err != "" {
		return st, fmt.Errorf("manager process: %s: %s", command, st.Err)
	}
	return st, nil
}

// stop closes the manager's stdin, which stops it, and waits for it.
func (m *managerProcess) stop() error {
	_ = m.in.Close()
	errc := make(chan error, 1)
	go func() { errc <- m.cmd.Wait() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(time.Minute):
		_ = m.cmd.Process.Kill()
		return fmt.Errorf("the manager process did not stop within a minute")
	}
}
