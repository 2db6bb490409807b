package controlplane

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// bareLabel marks the PodVolumeBackups of the bare-client baseline: no policy owns
// them, and they are deleted before the manager starts.
const bareLabel = "holdfast-bench/bare"

// BareCreate is how long a plain client (no informer, no controller; the manager's
// client settings: QPS -1) took to create one PodVolumeBackup per pod, shaped as a
// run's (labels, tags, parent), in the pods' namespaces.
type BareCreate struct {
	Workers int
	Objects int
	Took    time.Duration
}

// PerSecond is the create rate.
func (b BareCreate) PerSecond() float64 { return float64(b.Objects) / b.Took.Seconds() }

// createBare creates the baseline's objects with workers concurrent creates.
func createBare(ctx context.Context, cfg *rest.Config, c client.Client, opts Options, workers int, suffix string) (BareCreate, error) {
	bc := rest.CopyConfig(cfg)
	bc.QPS, bc.Burst = -1, 0
	cl, err := client.New(bc, client.Options{Scheme: c.Scheme()})
	if err != nil {
		return BareCreate{}, err
	}
	total := opts.Namespaces * opts.PodsPerNamespace
	start := time.Now()
	err = inParallel(workers, total, func(i int) error { return cl.Create(ctx, barePodVolumeBackup(i, opts, suffix)) })
	if err != nil {
		return BareCreate{}, err
	}
	return BareCreate{Workers: workers, Objects: total, Took: time.Since(start)}, nil
}

// barePodVolumeBackup is the backup a run creates for pod i: the same labels, spec
// and tags as createBackup's, namespace by namespace in the order a run goes.
func barePodVolumeBackup(i int, opts Options, suffix string) *v1.PodVolumeBackup {
	ns := fmt.Sprintf("team-%04d", i/opts.PodsPerNamespace)
	pod := fmt.Sprintf("app-%d", i%opts.PodsPerNamespace)
	policyName := policyName((i / opts.PodsPerNamespace) % opts.Policies)
	run := policyName + "-" + suffix // as runName: <policy>-<time>n<token hash>
	repo := identity.RepositoryName("default", v1.UploaderKopia)
	return &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{
			Name:      identity.PodVolumeBackupName(run, pod, "data"),
			Namespace: ns,
			Labels: map[string]string{
				v1.LabelPolicy: "bare-" + policyName, v1.LabelRun: run, bareLabel: "true",
				v1.LabelStorageLocation: "default", v1.LabelManagedBy: v1.ManagedByValue,
			},
		},
		Spec: v1.PodVolumeBackupSpec{
			Node:            fmt.Sprintf("node-%02d", i%50),
			Pod:             v1.PodReference{Name: pod, UID: string(types.UID(fmt.Sprintf("6a1c2e3f-0000-4000-8000-%012d", i)))},
			Volume:          "data",
			SourcePath:      "/pod/" + pod + "/data",
			StorageLocation: "default",
			Repository:      repo,
			Uploader:        v1.UploaderKopia,
			Tags: map[string]string{identity.TagPolicy: policyName, identity.TagRun: run,
				identity.TagNamespaceUID: fmt.Sprintf("0f1e2d3c-0000-4000-8000-%012d", i/opts.PodsPerNamespace)},
		},
	}
}

// deleteBare removes the baseline's objects, namespace by namespace.
func deleteBare(ctx context.Context, c client.Client, opts Options) error {
	return inParallel(16, opts.Namespaces, func(i int) error {
		return c.DeleteAllOf(ctx, &v1.PodVolumeBackup{}, client.InNamespace(fmt.Sprintf("team-%04d", i)),
			client.MatchingLabels{bareLabel: "true"})
	})
}

// planeCPU is the CPU time of the API server and etcd (children of this process).
type planeCPU struct{ APIServer, Etcd time.Duration }

func (a planeCPU) sub(b planeCPU) planeCPU {
	return planeCPU{APIServer: a.APIServer - b.APIServer, Etcd: a.Etcd - b.Etcd}
}

// readPlaneCPU sums utime+stime of this process's children named kube-apiserver and
// etcd, from /proc.
func readPlaneCPU() planeCPU {
	var out planeCPU
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < 0 {
			continue
		}
		comm, rest := s[open+1:end], strings.Fields(s[end+2:])
		// rest[1] is ppid, rest[11] utime, rest[12] stime (fields 4, 14, 15).
		if len(rest) < 13 || rest[1] != strconv.Itoa(self) || pid == self {
			continue
		}
		ut, _ := strconv.ParseInt(rest[11], 10, 64)
		st, _ := strconv.ParseInt(rest[12], 10, 64)
		d := time.Duration(ut+st) * time.Second / 100 // USER_HZ
		switch comm {
		case "kube-apiserver":
			out.APIServer += d
		case "etcd":
			out.Etcd += d
		}
	}
	return out
}

// profileAPIServer writes a CPU profile of the API server over the next d to file
// (its /debug/pprof, which a cluster admin may read); errors are returned on done.
func profileAPIServer(ctx context.Context, cfg *rest.Config, d time.Duration, file string) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			hc, err := rest.HTTPClientFor(cfg)
			if err != nil {
				return err
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet,
				strings.TrimSuffix(cfg.Host, "/")+fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("API server profile: %s: %s", resp.Status, b)
			}
			f, err := os.Create(file)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}()
	}()
	return done
}
