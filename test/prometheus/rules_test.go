package prometheus

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/test/metricnames"
	"github.com/holdfast-dev/holdfast/test/testenv"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ruleFileName is the name the promtool tests in testdata load their rules from
// (rule_files); TestPromtoolRules writes the shipped groups under it.
const ruleFileName = "holdfast.rules.yaml"

// contractAlerts are the alerts the metrics contract of issue 17 names; the rules may
// add others.
var contractAlerts = []string{
	"HoldfastVolumeBackupStale", "HoldfastVolumeBackupFailing", "HoldfastClaimUnprotected",
	"HoldfastVolumeUnprotected", "HoldfastStorageLocationNotReady", "HoldfastRepositoryStalled",
	"HoldfastAgentMissing", "HoldfastRestoreFailed", "HoldfastPolicyStalled",
}

// managerMetrics are the metrics the manager's code exports (metricnames.Manager).
// The rules read the manager's metrics only (the agent's are for dashboards): a rule
// reading any other holdfast_ series would never fire.
func managerMetrics(t *testing.T) map[string][]string {
	t.Helper()
	out, err := metricnames.Manager()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("the manager's code describes only %v", out)
	}
	return out
}

const runbookBase = "https://github.com/holdfast-dev/holdfast/blob/main/docs/alerts.md#"

// shippedRules returns the PrometheusRule of `kustomize build` of config/default with
// the component, decoded strictly, and its spec as a Prometheus rule file: the groups,
// byte for byte as the operator hands them to Prometheus.
func shippedRules(t *testing.T) (*monitoringv1.PrometheusRule, []byte) {
	t.Helper()
	u := find(t, buildWithComponent(t, ""), "PrometheusRule", "holdfast")
	rule := decodeStrict[monitoringv1.PrometheusRule](t, u)
	file, err := RuleFile([]*unstructured.Unstructured{u})
	if err != nil {
		t.Fatal(err)
	}
	return rule, file
}

// Every alert the contract names ships, and each one says how bad it is, what is
// wrong where, and links to its section of docs/alerts.md.
func TestRulesShipTheContractAlerts(t *testing.T) {
	rule, _ := shippedRules(t)
	anchors := docAnchors(t)
	metricName := regexp.MustCompile(`holdfast_[a-z_]+`)
	exported := managerMetrics(t)
	seen := map[string]bool{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: recording rule %s: the component ships alerts only", g.Name, r.Record)
				continue
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if url := r.Annotations["runbook_url"]; !strings.HasPrefix(url, runbookBase) || !anchors[strings.TrimPrefix(url, runbookBase)] {
				t.Errorf("%s: runbook_url %s is not a section of docs/alerts.md", r.Alert, url)
			} else if anchor := strings.TrimPrefix(url, runbookBase); anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url points to #%s, not to the alert's own section", r.Alert, anchor)
			}
			for _, m := range metricName.FindAllString(r.Expr.String(), -1) {
				if metricnames.Of(exported, m) == "" {
					t.Errorf("%s reads %s, which the manager does not export", r.Alert, m)
				}
			}
		}
	}
	for _, a := range contractAlerts {
		if !seen[a] {
			t.Errorf("alert %s is missing", a)
		}
	}
}

// promtoolTests is the part of a promtool test file this package checks.
type promtoolTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func testFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "test", "prometheus", "testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool test files in test/prometheus/testdata (%v)", err)
	}
	sort.Strings(files)
	return files
}

// Every shipped alert is tested firing and not firing, and every test file loads the
// rules from the file TestPromtoolRules generates from the shipped object, not from a
// copy of its own.
func TestEveryAlertIsTested(t *testing.T) {
	rule, _ := shippedRules(t)
	firing, quiet := map[string]int{}, map[string]int{}
	for _, f := range testFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var pt promtoolTests
		if err := yaml.Unmarshal(data, &pt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(pt.RuleFiles) != 1 || pt.RuleFiles[0] != ruleFileName {
			t.Errorf("%s: rule_files %v, want [%s]", filepath.Base(f), pt.RuleFiles, ruleFileName)
		}
		for _, tc := range pt.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					firing[at.Alertname]++
				} else {
					quiet[at.Alertname]++
				}
			}
		}
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if firing[r.Alert] == 0 {
				t.Errorf("no promtool test sees %s fire", r.Alert)
			}
			if quiet[r.Alert] == 0 {
				t.Errorf("no promtool test checks that %s stays quiet", r.Alert)
			}
		}
	}
}

// promtool checks the shipped rule groups and runs the unit tests in testdata on them.
func TestPromtoolRules(t *testing.T) {
	if testing.Short() {
		t.Skip("needs promtool from `make tools`")
	}
	promtool := filepath.Join(testenv.ToolsBin(), "promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Fatalf("promtool is missing from %s: run `make tools` (or `make test`, which builds it)", testenv.ToolsBin())
	}
	_, file := shippedRules(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ruleFileName), file, 0o644); err != nil {
		t.Fatal(err)
	}
	var tests []string
	for _, f := range testFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, filepath.Base(f))
	}

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	run("check", "rules", ruleFileName)
	run(append([]string{"test", "rules"}, tests...)...)
}

// The patch docs/alerts.md gives for changing a threshold builds and changes that
// alert, and no other.
func TestDocumentedThresholdPatch(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n### Changing a threshold\n")
	if !ok {
		t.Fatal(`docs/alerts.md has no section "Changing a threshold"`)
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal(`"Changing a threshold" has no yaml block`)
	}
	block, _, _ = strings.Cut(block, "```")

	u := find(t, buildWithComponent(t, block), "PrometheusRule", "holdfast")
	rule := decodeStrict[monitoringv1.PrometheusRule](t, u)
	shipped, _ := shippedRules(t)
	for gi, g := range rule.Spec.Groups {
		for ri, r := range g.Rules {
			want := shipped.Spec.Groups[gi].Rules[ri].For
			if r.Alert == "HoldfastClaimUnprotected" {
				d := monitoringv1.Duration("24h")
				want = &d
			}
			if (r.For == nil) != (want == nil) || (r.For != nil && *r.For != *want) {
				t.Errorf("%s: for %v, want %v", r.Alert, r.For, want)
			}
		}
	}
}
