package agent_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/metrics"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// agentScrape is one scrape of the agent process's /metrics.
type agentScrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func scrapeAgent(t *testing.T) agentScrape {
	t.Helper()
	var s agentScrape
	waitFor(t, "the agent's metrics endpoint", func() error {
		resp, err := http.Get("http://" + fx.metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %v", resp.StatusCode, err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("parsing the scrape: %w", err)
		}
		s = agentScrape{text: string(body), families: fams}
		return nil
	})
	return s
}

// find returns the series of name whose labels include match.
func (s agentScrape) find(name string, match map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range s.families[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// counter is the value of one counter series, 0 when it is not there yet.
func (s agentScrape) counter(name string, match map[string]string) float64 {
	var v float64
	for _, m := range s.find(name, match) {
		v += m.GetCounter().GetValue()
	}
	return v
}

// histogram is the sample count and sum of the matching histogram series.
func (s agentScrape) histogram(name string, match map[string]string) (uint64, float64) {
	var n uint64
	var sum float64
	for _, m := range s.find(name, match) {
		n += m.GetHistogram().GetSampleCount()
		sum += m.GetHistogram().GetSampleSum()
	}
	return n, sum
}

func (s agentScrape) gauge(name string, match map[string]string) (float64, bool) {
	ms := s.find(name, match)
	if len(ms) != 1 {
		return 0, false
	}
	return ms[0].GetGauge().GetValue(), true
}

// holdfastLines are the agent's own lines of a scrape, for the log.
func (s agentScrape) holdfastLines() string {
	var out []string
	for _, l := range strings.Split(s.text, "\n") {
		if strings.Contains(l, "holdfast_agent_") && !strings.HasPrefix(l, "# HELP") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAgentMetricsAfterABackup runs a real backup and reads the agent's /metrics: the
// job is counted with its outcome, its data mover's run time and peak memory are
// observed, and every series of the agent names its node.
func TestAgentMetricsAfterABackup(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	v := newVolume(t, ns, "app")
	if err := os.WriteFile(filepath.Join(v.dir, "f"), bytes.Repeat([]byte("metrics"), 1<<17), 0o644); err != nil {
		t.Fatal(err)
	}
	node := map[string]string{"node": nodeName}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"node": nodeName}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	before := scrapeAgent(t)
	completed := with("kind", "backup", "outcome", "Completed")
	moved := with("kind", "backup", "uploader", "kopia")
	jobs0 := before.counter(metrics.AgentJobsTotal, completed)
	runs0, _ := before.histogram(metrics.AgentJobDuration, moved)
	peaks0, peakSum0 := before.histogram(metrics.AgentMoverPeakMemory, moved)

	if got := waitBackupPhase(t, createBackup(t, v, "measured", "minio", repo, v1.UploaderKopia), v1.RunCompleted, v1.RunFailed); got.Status.Phase != v1.RunCompleted {
		t.Fatalf("backup %s: %s", got.Status.Phase, got.Status.Message)
	}
	var after agentScrape
	waitFor(t, "the backup counted", func() error {
		after = scrapeAgent(t)
		if n := after.counter(metrics.AgentJobsTotal, completed); n != jobs0+1 {
			return fmt.Errorf("%s%v = %v, want %v", metrics.AgentJobsTotal, completed, n, jobs0+1)
		}
		return nil
	})
	t.Logf("the agent's metrics after one backup:\n%s", after.holdfastLines())

	if runs, sum := after.histogram(metrics.AgentJobDuration, moved); runs != runs0+1 || sum <= 0 {
		t.Errorf("%s%v: %d runs (%v s), want %d", metrics.AgentJobDuration, moved, runs, sum, runs0+1)
	}
	peaks, peakSum := after.histogram(metrics.AgentMoverPeakMemory, moved)
	// A Go process that runs kopia holds megabytes; what matters is that the figure is
	// the child's and is there.
	if peak := peakSum - peakSum0; peaks != peaks0+1 || peak < 1<<20 {
		t.Errorf("%s%v: %d observations, last %v bytes; want %d and at least 1 MiB", metrics.AgentMoverPeakMemory, moved, peaks, peak, peaks0+1)
	} else {
		t.Logf("peak memory of the data mover: %.0f MiB", peak/(1<<20))
	}
	if v, ok := after.gauge(metrics.AgentInfo, node); !ok || v != 1 {
		t.Errorf("%s{node=%q}: %v, %v; want 1", metrics.AgentInfo, nodeName, v, ok)
	} else if ver := after.find(metrics.AgentInfo, node)[0]; !strings.Contains(ver.String(), `name:"version"`) {
		t.Errorf("%s has no version label: %v", metrics.AgentInfo, ver)
	}
	for _, kind := range []string{"backup", "restore"} {
		for _, state := range []string{"running", "queued"} {
			if _, ok := after.gauge(metrics.AgentJobs, with("kind", kind, "state", state)); !ok {
				t.Errorf("no %s{kind=%s,state=%s,node=%s}", metrics.AgentJobs, kind, state, nodeName)
			}
		}
	}
	for name, fam := range after.families {
		if strings.HasPrefix(name, "holdfast_agent_") && len(after.find(name, node)) != len(fam.GetMetric()) {
			t.Errorf("%s has series without node=%q", name, nodeName)
		}
	}
}

// TestAgentMetricsShowRunningAndQueuedJobs holds backups in flight with the store
// paused: the agent's two slots are running, the third backup is queued; once the
// store is back and they end, none is.
func TestAgentMetricsShowRunningAndQueuedJobs(t *testing.T) {
	testenv.Require(t, env)
	ns := env.Namespace(t, nil)
	repo := ensureRepository(t, ns, "minio", v1.UploaderKopia)
	state := func(s string) map[string]string {
		return map[string]string{"node": nodeName, "kind": "backup", "state": s}
	}
	pauseStore(t)
	var pvbs []*v1.PodVolumeBackup
	for i := range 3 {
		v := newVolume(t, ns, fmt.Sprintf("app-%d", i))
		if err := os.WriteFile(filepath.Join(v.dir, "f"), bytes.Repeat([]byte{byte(i)}, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		pvbs = append(pvbs, createBackup(t, v, fmt.Sprintf("held-%d", i), "minio", repo, v1.UploaderKopia))
	}
	waitFor(t, "two backups running and one queued", func() error {
		s := scrapeAgent(t)
		running, _ := s.gauge(metrics.AgentJobs, state("running"))
		queued, _ := s.gauge(metrics.AgentJobs, state("queued"))
		if running != 2 || queued != 1 {
			return fmt.Errorf("running %v, queued %v", running, queued)
		}
		return nil
	})
	resumeStore(t)
	for _, pvb := range pvbs {
		waitBackupPhase(t, pvb, v1.RunCompleted, v1.RunFailed, v1.RunCanceled)
	}
	waitFor(t, "no backup running or queued", func() error {
		s := scrapeAgent(t)
		running, _ := s.gauge(metrics.AgentJobs, state("running"))
		queued, _ := s.gauge(metrics.AgentJobs, state("queued"))
		if running != 0 || queued != 0 {
			return fmt.Errorf("running %v, queued %v", running, queued)
		}
		return nil
	})
}
