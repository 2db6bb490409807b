package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/holdfast-dev/holdfast/test/kustomize"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// The shipped monitoring component and the scrape identity in it (config/prometheus).
const (
	prometheusComponent = "config/prometheus"
	scraperTokenSecret  = "holdfast-metrics-scraper-token"
	// ScrapeInterval is the scrape and rule evaluation interval of the stories'
	// Prometheus: short, so that a condition shows within seconds.
	ScrapeInterval = 2 * time.Second
)

// Prometheus is a Prometheus server on the host's loopback that scrapes the manager and
// the agents of the cluster and evaluates the shipped alerting rules.
type Prometheus struct {
	// URL is its HTTP API, http://127.0.0.1:<port>.
	URL string
	API promv1.API
	// Token is the bearer token it scrapes with.
	Token string
	dir   string
	done  chan struct{}
	proc  *os.Process
}

// componentObjects returns the objects of `kustomize build config/prometheus`, as
// docs/alerts.md tells a user without the Prometheus Operator to build them.
func (e *Env) componentObjects() ([]*unstructured.Unstructured, error) {
	return kustomize.Build(filepath.Join(e.Cluster.RepoRoot, prometheusComponent))
}

// ApplyScraperIdentity applies the scrape identity of the component (its
// ServiceAccount, token Secret and ClusterRoleBinding to holdfast-metrics-reader; the
// monitors and the rule object need the Prometheus Operator's CRDs and are left out)
// and returns the token the API server's token controller put into the Secret.
func (e *Env) ApplyScraperIdentity(ctx context.Context, objs []*unstructured.Unstructured) (string, error) {
	var docs []string
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "Secret", "ClusterRoleBinding":
			b, err := yaml.Marshal(o.Object)
			if err != nil {
				return "", err
			}
			docs = append(docs, string(b))
		}
	}
	if len(docs) != 3 {
		return "", fmt.Errorf("%s: want a ServiceAccount, a Secret and a ClusterRoleBinding, found %d of them", prometheusComponent, len(docs))
	}
	e.Log("applying the scrape identity of %s: ServiceAccount, token Secret, ClusterRoleBinding to holdfast-metrics-reader", prometheusComponent)
	if _, err := e.Kubectl(ctx, strings.Join(docs, "---\n"), "apply", "--server-side", "-f", "-"); err != nil {
		return "", err
	}
	var token string
	secret := &corev1.Secret{}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "holdfast-system", Name: scraperTokenSecret}, secret); err != nil {
			return false, nil
		}
		token = string(secret.Data["token"])
		return token != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("the token controller did not fill Secret %s: %w", scraperTokenSecret, err)
	}
	return token, nil
}

// DeleteScraperIdentity removes what ApplyScraperIdentity applied.
func (e *Env) DeleteScraperIdentity(ctx context.Context) error {
	_, err := e.Kubectl(ctx, "", "delete", "--ignore-not-found", "clusterrolebinding/holdfast-metrics-scraper",
		"-n", "holdfast-system", "secret/"+scraperTokenSecret, "serviceaccount/holdfast-metrics-scraper")
	return err
}

// prometheusConfig is the server's configuration: the scrape jobs docs/alerts.md
// ("Without the Prometheus Operator") gives, with Kubernetes service discovery through
// the cluster's kubeconfig, and the shipped rules.
func prometheusConfig(kubeconfig, tokenFile, ruleFile string) string {
	return fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
rule_files: [%[4]q]
scrape_configs:
# The manager: the endpoints of the Service holdfast-manager-metrics, port https.
- job_name: holdfast-manager
  scheme: https
  authorization:
    credentials_file: %[3]q
  tls_config:
    insecure_skip_verify: true
  kubernetes_sd_configs:
  - role: endpointslice
    kubeconfig_file: %[2]q
    namespaces: {names: [holdfast-system]}
  relabel_configs:
  - source_labels: [__meta_kubernetes_service_name, __meta_kubernetes_endpointslice_port_name]
    regex: holdfast-manager-metrics;https
    action: keep
# Each agent: port metrics of the pods of the DaemonSet, with their node.
- job_name: holdfast-agent
  scheme: https
  authorization:
    credentials_file: %[3]q
  tls_config:
    insecure_skip_verify: true
  honor_labels: true
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: %[2]q
    namespaces: {names: [holdfast-system]}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component, __meta_kubernetes_pod_container_port_name]
    regex: agent;metrics
    action: keep
  - source_labels: [__meta_kubernetes_pod_node_name]
    target_label: node
`, model.Duration(ScrapeInterval), kubeconfig, tokenFile, ruleFile)
}

// StartPrometheus starts bin/tools/prometheus on a free port of 127.0.0.1 with its
// configuration, token, rules and data in dir, and waits until it is ready. The
// server gets SIGKILL when the thread that started it ends, and that thread ends only
// with the server or with the test process: a test binary that is killed leaves no
// Prometheus behind. Stop it with Stop.
func (e *Env) StartPrometheus(ctx context.Context, dir, token string, rules []byte) (*Prometheus, error) {
	bin := filepath.Join(e.Cluster.ToolsBin, "prometheus")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w (run `make tools`)", err)
	}
	tokenFile, ruleFile := filepath.Join(dir, "token"), filepath.Join(dir, "holdfast.rules.yaml")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ruleFile, rules, 0o600); err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "prometheus.yaml")
	if err := os.WriteFile(configFile, []byte(prometheusConfig(e.Cluster.Kubeconfig(), tokenFile, ruleFile)), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddress()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &Prometheus{URL: "http://" + addr, Token: token, dir: dir, done: make(chan struct{})}
	started := make(chan error)
	go func() {
		// Never unlocked: the thread ends with this goroutine, once the server exited.
		// The parent-death signal is tied to this thread, not to the process.
		runtime.LockOSThread()
		defer close(p.done)
		defer logFile.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.proc = cmd.Process
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	e.Log("started Prometheus %s (pid %d) on %s, data in %s", bin, p.proc.Pid, p.URL, dir)
	c, err := promapi.NewClient(promapi.Config{Address: p.URL})
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.API = promv1.NewAPI(c)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.done:
			return false, errors.New("prometheus exited while starting")
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/-/ready", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req) // ctx ends with the poll's minute
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		p.Stop()
		log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
		return nil, fmt.Errorf("prometheus is not ready: %w\n%s", err, log)
	}
	return p, nil
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits until it exited.
func (p *Prometheus) Stop() {
	if p.proc == nil {
		return
	}
	_ = p.proc.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.proc.Kill()
		<-p.done
	}
}

// Targets says, for each target, its job, URL, health and the last scrape's error.
func (p *Prometheus) Targets(ctx context.Context) string {
	res, err := p.API.Targets(ctx)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, t := range res.Active {
		out = append(out, fmt.Sprintf("%s %s: %s %s", t.Labels["job"], t.ScrapeURL, t.Health, t.LastError))
	}
	return strings.Join(out, "\n")
}

// Log returns the server's log.
func (p *Prometheus) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "prometheus.log"))
	return string(b)
}

func freeLoopbackAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Query runs an instant query.
func (p *Prometheus) Query(ctx context.Context, q string) (model.Vector, error) {
	v, _, err := p.API.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s: a %s, not a vector", q, v.Type())
	}
	return vec, nil
}

// WaitQuery waits until the result of q satisfies cond, which says why not, and
// returns that result.
func (p *Prometheus) WaitQuery(ctx context.Context, q string, timeout time.Duration, cond func(model.Vector) (bool, string)) (model.Vector, error) {
	var vec model.Vector
	var why string
	err := wait.PollUntilContextTimeout(ctx, ScrapeInterval/2, timeout, true, func(ctx context.Context) (bool, error) {
		v, err := p.Query(ctx, q)
		if err != nil {
			if ctx.Err() == nil { // a query cut by the deadline says nothing of the condition
				why = err.Error()
			}
			return false, nil
		}
		vec = v
		ok, w := cond(vec)
		why = w
		return ok, nil
	})
	if err != nil {
		return vec, fmt.Errorf("waiting for %s: %w: %s", q, err, why)
	}
	return vec, nil
}

// WaitAlert waits until the alert name with the labels want (a subset of its labels)
// is in state ("pending" or "firing") and returns it.
func (p *Prometheus) WaitAlert(ctx context.Context, name string, want model.LabelSet, state promv1.AlertState, timeout time.Duration) (promv1.Alert, error) {
	var found promv1.Alert
	var why string
	err := wait.PollUntilContextTimeout(ctx, ScrapeInterval/2, timeout, true, func(ctx context.Context) (bool, error) {
		res, err := p.API.Alerts(ctx)
		if err != nil {
			if ctx.Err() == nil {
				why = err.Error()
			}
			return false, nil
		}
		var seen []string
		for _, a := range res.Alerts {
			if string(a.Labels[model.AlertNameLabel]) != name {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s %s", a.Labels, a.State))
			if hasLabels(a.Labels, want) && a.State == state {
				found = a
				return true, nil
			}
		}
		why = fmt.Sprintf("active %s alerts: %v", name, seen)
		return false, nil
	})
	if err != nil {
		return found, fmt.Errorf("waiting for alert %s%s to be %s: %w (%s)", name, want, state, err, why)
	}
	return found, nil
}

func hasLabels(have, want model.LabelSet) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// ScrapeManager reads the manager's /metrics as Prometheus does: from the manager pod,
// over HTTPS with the scrape token.
func (e *Env) ScrapeManager(ctx context.Context, token string) (string, error) {
	pods := &corev1.PodList{}
	if err := e.Client.List(ctx, pods, client.InNamespace("holdfast-system"), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		return "", err
	}
	var ip string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			ip = p.Status.PodIP
		}
	}
	if ip == "" {
		return "", errors.New("no manager pod with an IP")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(ip, "8080")+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed, made at every start
	}}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics of the manager: %s: %s", resp.Status, body)
	}
	return string(body), nil
}
