package dashboard

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/internal/metrics"
	"github.com/holdfast-dev/holdfast/test/metricnames"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// committed is the dashboard file that ships, relative to the repository root.
const committed = "config/grafana/holdfast-dashboard.json"

// The committed dashboard is what the generator makes now: a change to the panels
// without `go generate ./internal/dashboard` fails here.
func TestCommittedDashboardIsCurrent(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), committed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run `go generate ./internal/dashboard` (or `make generate`) and commit the result", committed)
	}
}

// The committed file decodes strictly as a dashboard of the SDK's schema (every field
// known, every panel and query of a known plugin), as Grafana reads it.
func TestCommittedDashboardDecodesStrictly(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), committed))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard.Dashboard
	// The SDK returns its error list as an error even when the list is empty.
	if err := d.UnmarshalJSONStrict(data); err != nil && !isEmpty(err) {
		t.Fatalf("%s: %v", committed, err)
	}
	if err := d.Validate(); err != nil && !isEmpty(err) {
		t.Fatalf("%s: %v", committed, err)
	}
	if d.Uid == nil || *d.Uid != UID {
		t.Errorf("uid %v, want %s", d.Uid, UID)
	}
}

func isEmpty(err error) bool {
	errs, ok := err.(cog.BuildErrors)
	return ok && len(errs) == 0
}

// panelQuery is one PromQL expression of the dashboard and where it is.
type panelQuery struct {
	where, expr string
	// label is the label a variable's label_values() reads, "" for a panel's query.
	label string
}

// labelValues is the form of a variable's query: label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// queries returns every PromQL expression the dashboard evaluates: each panel's
// targets and the selector of each query variable.
func queries(t *testing.T) []panelQuery {
	t.Helper()
	d, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var out []panelQuery
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.Query == nil || v.Query.String == nil {
			t.Fatalf("variable %s has no query string", v.Name)
		}
		m := labelValues.FindStringSubmatch(*v.Query.String)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, *v.Query.String)
		}
		out = append(out, panelQuery{where: "variable " + v.Name, expr: m[1], label: m[2]})
	}
	for _, p := range d.Panels {
		if p.Panel == nil {
			continue
		}
		title := ""
		if p.Panel.Title != nil {
			title = *p.Panel.Title
		}
		if len(p.Panel.Targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, target := range p.Panel.Targets {
			q, ok := target.(prometheus.Dataquery)
			if !ok {
				t.Fatalf("panel %q: a %T query, want a Prometheus one", title, target)
			}
			ref := ""
			if q.RefId != nil {
				ref = *q.RefId
			}
			out = append(out, panelQuery{where: fmt.Sprintf("panel %q query %s", title, ref), expr: q.Expr})
		}
	}
	if len(out) < 40 {
		t.Fatalf("only %d queries in the dashboard", len(out))
	}
	return out
}

// grafanaIntervals are the interval variables Grafana replaces before it sends a query;
// any value of theirs parses alike.
var grafanaIntervals = regexp.MustCompile(`\$__(rate_interval|interval|range)\b`)

// promQL is the expression as Prometheus receives it: Grafana's interval variables
// replaced. The dashboard's own variables ($namespace, ...) stand only inside label
// matcher strings, where Prometheus reads them as text, so they stay: one anywhere
// else makes the expression fail to parse.
func promQL(expr string) string {
	return grafanaIntervals.ReplaceAllString(expr, "5m")
}

func promtool(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs promtool from `make tools`")
	}
	p := filepath.Join(testenv.ToolsBin(), "promtool")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("promtool is missing from %s: run `make tools` (or `make test`, which builds it)", testenv.ToolsBin())
	}
	return p
}

// Every query parses as PromQL, by Prometheus's own parser: promtool checks a rule
// file that records each query of the dashboard.
func TestQueriesParse(t *testing.T) {
	tool := promtool(t)
	qs := queries(t)
	var rules []map[string]string
	for i, q := range qs {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard_query_%d", i), "expr": promQL(q.expr)})
	}
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "check", "rules", file).CombinedOutput()
	if err != nil {
		// Name the panel of each rule promtool reports.
		msg := string(out)
		for i := len(qs) - 1; i >= 0; i-- {
			msg = strings.ReplaceAll(msg, fmt.Sprintf("dashboard_query_%d", i), qs[i].where)
		}
		t.Fatalf("promtool check rules: %v\n%s", err, msg)
	}
	t.Logf("promtool check rules: %d queries\n%s", len(qs), out)
}

// registered maps the name of every metric Holdfast's code registers (the manager's
// and the agent's) to the labels its series carry.
func registered(t *testing.T) map[string][]string {
	t.Helper()
	out, err := metricnames.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 30 {
		t.Fatalf("the code registers only %v", out)
	}
	return out
}

// seriesOf is the registered metric a series name belongs to and the labels that
// series carries: a histogram's _bucket (with le), _sum and _count are its own.
func seriesOf(reg map[string][]string, name string) (string, []string, bool) {
	base := metricnames.Of(reg, name)
	if base == "" {
		return "", nil, false
	}
	labels := reg[base]
	if name == base+"_bucket" {
		labels = append(slices.Clone(labels), "le")
	}
	return base, labels, true
}

// marker is a label matcher promtool adds to every vector selector of a query, so
// that each selector can be found in its output.
const marker = `__dashboard_selector__="1"`

var (
	// selector is a vector selector in promtool's canonical output: its metric name
	// (none for a selector by __name__ alone) and its matchers, each a label name, an
	// operator and a quoted string.
	selector    = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\{((?:[a-zA-Z_][a-zA-Z0-9_]*(?:=|!=|=~|!~)"(?:[^"\\]|\\.)*",?)*)\}`)
	matcherName = regexp.MustCompile(`(?:^|,)([a-zA-Z_][a-zA-Z0-9_]*)(?:=|!=|=~|!~)"(?:[^"\\]|\\.)*"`)
	// grouping is a by/without/on/ignoring/group_x label list in promtool's output.
	grouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right) \(([^)]*)\)`)
)

// vectorSelector is a selector of a query: its metric name and the label names it
// matches on (the marker left out).
type vectorSelector struct {
	name     string
	matchers []string
}

// selectors returns the vector selectors of expr as Prometheus's parser finds them
// (promtool's label-matchers set adds the marker to each and prints the result), and
// the expression in canonical form.
func selectors(t *testing.T, tool, expr string) ([]vectorSelector, string) {
	t.Helper()
	name, value, _ := strings.Cut(marker, "=")
	out, err := exec.Command(tool, "--experimental", "promql", "label-matchers", "set", promQL(expr), name, strings.Trim(value, `"`)).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool promql label-matchers set %q: %v\n%s", expr, err, out)
	}
	canonical := string(out)
	var sels []vectorSelector
	for _, m := range selector.FindAllStringSubmatch(canonical, -1) {
		if !strings.Contains(m[2], marker) {
			continue // a string that looks like a selector, not one
		}
		s := vectorSelector{name: m[1]}
		for _, l := range matcherName.FindAllStringSubmatch(m[2], -1) {
			if l[1] != name {
				s.matchers = append(s.matchers, l[1])
			}
		}
		sels = append(sels, s)
	}
	if n := strings.Count(canonical, marker); n != len(sels) {
		t.Fatalf("promtool marked %d selectors, the test read %d of them:\n%s", n, len(sels), canonical)
	}
	return sels, canonical
}

// Every metric a query reads is one the code registers, and every label a query
// matches or groups by is a label of the metrics it reads: a misspelt name or label
// would leave its panel empty without an error.
func TestQueriesReadRegisteredMetrics(t *testing.T) {
	tool := promtool(t)
	reg := registered(t)
	for _, q := range queries(t) {
		sels, canonical := selectors(t, tool, q.expr)
		if len(sels) == 0 {
			t.Errorf("%s: promtool found no selector in %q:\n%s", q.where, q.expr, canonical)
			continue
		}
		known, unknown := map[string]bool{}, false
		for _, s := range sels {
			if s.name == "" {
				t.Errorf("%s: a selector without a metric name in %s", q.where, canonical)
				continue
			}
			metric, labels, ok := seriesOf(reg, s.name)
			if !ok {
				t.Errorf("%s reads %s, which the code does not register", q.where, s.name)
				unknown = true
				continue
			}
			for _, l := range labels {
				known[l] = true
			}
			for _, m := range s.matchers {
				if !slices.Contains(labels, m) {
					t.Errorf("%s: %s has no label %s (it has %v)", q.where, metric, m, labels)
				}
			}
		}
		var grouped []string
		for _, g := range grouping.FindAllStringSubmatch(canonical, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" {
					grouped = append(grouped, l)
				}
			}
		}
		if q.label != "" {
			grouped = append(grouped, q.label)
		}
		if unknown {
			continue // its labels are not known either
		}
		for _, l := range grouped {
			if !known[l] {
				t.Errorf("%s: groups by or reads label %s, which none of the metrics it reads has", q.where, l)
			}
		}
	}
}

// Every query returns something when every registered metric has series: a query
// whose parts cannot match each other (labels that differ on the two sides of an
// operator, a filter no value passes) would show an empty panel however healthy or
// broken the cluster is. promtool evaluates each query, as an alert on absent(query),
// over input series made from the registered descriptors; a query that returns nothing
// fires its alert. A count that falls back to 0 (or vector(0)) is evaluated without
// the fallback.
func TestQueriesReturnData(t *testing.T) {
	tool := promtool(t)
	reg := registered(t)
	qs := queries(t)

	var rules []map[string]any
	for _, q := range qs {
		if q.label != "" {
			continue // a variable's selector is read by a panel too
		}
		// Every variable on "All", which Grafana sends as its allValue.
		expr := allValues.ReplaceAllString(promQL(q.expr), ".*")
		expr = strings.TrimSuffix(expr, " or vector(0)")
		rules = append(rules, map[string]any{
			"alert":  "DashboardQueryEmpty",
			"expr":   "absent(" + expr + ")",
			"labels": map[string]string{"query": q.where},
		})
	}
	dir := t.TempDir()
	write := func(name string, v any) {
		data, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dashboard.rules.yaml", map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	write("dashboard.test.yaml", map[string]any{
		"rule_files":          []string{"dashboard.rules.yaml"},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":     "1m",
			"input_series": inputSeries(reg),
			"alert_rule_test": []any{map[string]any{
				"eval_time": "2h", "alertname": "DashboardQueryEmpty", "exp_alerts": []any{},
			}},
		}},
	})
	cmd := exec.Command(tool, "test", "rules", "dashboard.test.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v: these queries return nothing over series of every metric:\n%s", err, out)
	}
}

// allValues are the dashboard's own variables in a query.
var allValues = regexp.MustCompile(`\$(namespace|policy|node)\b`)

// histograms are the registered histograms (their descriptors do not say so).
var histograms = []string{metrics.RestoreDuration, metrics.StorageLocationProbeDuration, metrics.AgentJobDuration, metrics.AgentMoverPeakMemory}

// inputSeries are two hours of series, one a minute, of every registered metric with
// every label set: a value per label, every value a query filters on for state; and a
// second volume without a successful backup. Gauges hold values that pass the
// dashboard's filters (a volume whose last attempt failed three times, long overdue;
// a node with protected volumes and no agent; a failed restore); counters and
// histograms count one a minute.
func inputSeries(reg map[string][]string) []map[string]string {
	values := map[string]string{
		"namespace": "app", "source": "/pvc/data", "claim": "data", "policy": "daily", "location": "default",
		"repository": "app-default-kopia", "uploader": "kopia", "node": "node-1", "kind": "backup",
		"outcome": "Failed", "reason": "BackupFailed", "restore": "restore-1", "volume": "cache", "version": "devel",
	}
	states := []string{"protected", "skipped", "excluded", "unprotected", "selected", "completed", "failed", "running", "queued"}
	gauge := map[string]string{
		metrics.VolumeLastSuccessTimestamp:         "0+0x120",
		metrics.VolumeBackupInterval:               "600+0x120",
		metrics.VolumeLastAttemptSuccess:           "0+0x120",
		metrics.VolumeConsecutiveFailures:          "3+0x120",
		metrics.RepositoryLastMaintenanceTimestamp: "0+0x120",
		metrics.NodeAgentRunning:                   "0+0x120",
	}
	var out []map[string]string
	add := func(series string, labels map[string]string, value string) {
		var pairs []string
		for _, l := range slices.Sorted(maps.Keys(labels)) {
			pairs = append(pairs, fmt.Sprintf("%s=%q", l, labels[l]))
		}
		out = append(out, map[string]string{"series": series + "{" + strings.Join(pairs, ",") + "}", "values": value})
	}
	for _, name := range slices.Sorted(maps.Keys(reg)) {
		sets := []map[string]string{{}}
		for _, l := range reg[name] {
			var next []map[string]string
			for _, set := range sets {
				vs := []string{values[l]}
				if l == "state" {
					vs = states
				}
				for _, v := range vs {
					s := maps.Clone(set)
					s[l] = v
					next = append(next, s)
				}
			}
			sets = next
		}
		if slices.Contains(reg[name], "source") && name != metrics.VolumeLastSuccessTimestamp {
			for _, set := range slices.Clone(sets) {
				s := maps.Clone(set)
				s["source"] = "/pvc/never"
				sets = append(sets, s)
			}
		}
		for _, set := range sets {
			switch {
			case slices.Contains(histograms, name):
				for _, le := range []string{"1", "+Inf"} {
					b := maps.Clone(set)
					b["le"] = le
					add(name+"_bucket", b, "0+1x120")
				}
				add(name+"_sum", set, "0+1x120")
				add(name+"_count", set, "0+1x120")
			case strings.HasSuffix(name, "_total"):
				add(name, set, "0+1x120")
			case gauge[name] != "":
				add(name, set, gauge[name])
			default:
				add(name, set, "1+0x120")
			}
		}
	}
	return out
}
