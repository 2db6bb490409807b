package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processRecord is what `up` writes for every daemon it starts, so that `down` (in
// another process, maybe after a crash) stops exactly that process: the start time
// guards against a PID the kernel has since given to an unrelated program.
type processRecord struct {
	Name      string   `json:"name"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"` // field 22 of /proc/<pid>/stat
	Args      []string `json:"args"`
	Log       string   `json:"log"`
}

// start runs a daemon in its own process group with its output in logs/<name>.log and
// records it under pids/. The daemon outlives this process; `down` stops it.
func (c *Cluster) start(name string, env []string, bin string, args ...string) (*processRecord, error) {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.path("pids"), 0o755); err != nil {
		return nil, err
	}
	logPath := c.path("logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s: %s %s\n", time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = c.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	rec := &processRecord{Name: name, PID: cmd.Process.Pid, Args: append([]string{bin}, args...), Log: logPath}
	rec.StartTime, _ = procStartTime(rec.PID)
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(c.path("pids", name+".json"), b, 0o644); err != nil {
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
		return nil, err
	}
	// Reap the child when it exits so that a dead daemon is not a zombie that still
	// looks alive to `running` while this process lives (the test runs `up` in-process).
	go func() { _ = cmd.Wait() }()
	c.logf("started %s (pid %d), log %s", name, rec.PID, logPath)
	return rec, nil
}

// records returns the recorded daemons, most recently started first, which is the
// order to stop them in.
func (c *Cluster) records() ([]processRecord, error) {
	paths, err := filepath.Glob(c.path("pids", "*.json"))
	if err != nil {
		return nil, err
	}
	var recs []processRecord
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r processRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		recs = append(recs, r)
	}
	order := map[string]int{}
	for i, n := range startOrder {
		order[n] = i
	}
	// A later node's daemon (containerd-2) sorts after the first node's.
	sort.Slice(recs, func(i, j int) bool {
		bi, ni := daemonBase(recs[i].Name)
		bj, nj := daemonBase(recs[j].Name)
		if order[bi] != order[bj] {
			return order[bi] > order[bj]
		}
		return ni > nj
	})
	return recs, nil
}

// daemonBase splits a daemon's name into the program and the node number: "kubelet-2"
// is the kubelet of node 2, "kubelet" that of node 1.
func daemonBase(name string) (string, int) {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i], n
		}
	}
	return name, 1
}

// alive reports whether the recorded process still runs (and is still the same one).
func (r processRecord) alive() bool {
	st, err := procStartTime(r.PID)
	if err != nil {
		return false
	}
	if r.StartTime != 0 && st != r.StartTime {
		return false
	}
	state, _ := procState(r.PID)
	return state != "Z"
}

// stopRecord stops one recorded daemon and everything in its process group: SIGTERM,
// then SIGKILL once grace has passed. It returns when the process is gone.
func stopRecord(ctx context.Context, r processRecord, grace time.Duration) error {
	if !r.alive() {
		return nil
	}
	_ = syscall.Kill(-r.PID, syscall.SIGTERM)
	_ = syscall.Kill(r.PID, syscall.SIGTERM)
	gone := func() bool { return !r.alive() }
	if waitFor(ctx, grace, 50*time.Millisecond, gone) {
		_ = syscall.Kill(-r.PID, syscall.SIGKILL) // leftovers in the group
		return nil
	}
	_ = syscall.Kill(-r.PID, syscall.SIGKILL)
	_ = syscall.Kill(r.PID, syscall.SIGKILL)
	if waitFor(ctx, 10*time.Second, 50*time.Millisecond, gone) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", r.Name, r.PID)
}

// waitFor polls cond until it is true or timeout passes; it reports whether cond
// became true. Polling is the only way to wait for a process that is not our child
// or for a kernel object to disappear.
func waitFor(ctx context.Context, timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}

func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	// The command name (field 2) is in parentheses and may contain spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	return strings.Fields(s[i+1:]), nil // fields from 3 on
}

func procStartTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22
}

func procState(pid int) (string, error) {
	f, err := procStat(pid)
	if err != nil || len(f) == 0 {
		return "", err
	}
	return f[0], nil
}

// clusterBinaries are the programs the cluster runs; only these are stopped because
// their command line names the state directory (a shell tailing a log there is not).
var clusterBinaries = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true,
	"kube-proxy": true, "kubelet": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true,
}

// processesUsing returns the PIDs of every cluster program (other than this process)
// whose command line mentions one of the given paths, or whose cgroup is one the kubelet
// made for pods. That catches what a recorded PID cannot: containerd shims (re-parented
// to init, in their own process groups) and container processes.
func processesUsing(paths []string) []int {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		if st, _ := procState(pid); st == "Z" {
			continue
		}
		cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		hit := strings.Contains(string(cg), "/kubepods")
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		if clusterBinaries[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			for _, p := range paths {
				if strings.Contains(string(cmdline), p) {
					hit = true
				}
			}
		}
		if hit {
			pids = append(pids, pid)
		}
	}
	return pids
}

// MemoryUsage sums the resident memory of every process of the cluster (the daemons,
// the containerd shims, the containers and whatever lives in a node's mount
// namespace) and counts them, for the cost figures of the docs and `status`.
func (c *Cluster) MemoryUsage() (rssBytes uint64, processes int) {
	seen := map[int]bool{}
	for _, pid := range append(processesUsing([]string{c.StateDir, c.KubeletRoot}), c.nodeNamespaceProcesses()...) {
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if rss, err := procRSS(pid); err == nil {
			rssBytes += rss
			processes++
		}
	}
	return rssBytes, processes
}

// procRSS is a process's resident set size (VmRSS in /proc/<pid>/status).
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}
