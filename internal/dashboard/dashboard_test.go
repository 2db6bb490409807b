package dashboard

import (
	"bytes"
	"fmt"
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
	client "github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-dev/holdfast/agent"
	"github.com/holdfast-dev/holdfast/controllers/coverage"
	"github.com/holdfast-dev/holdfast/controllers/monitoring"
	"github.com/holdfast-dev/holdfast/internal/metrics"
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
// state collector, coverage, the counted restores and probes, the agent's) to the
// labels its series carry.
func registered(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	describe(t, out, nil,
		monitoring.New(nil, monitoring.Options{}).Describe, coverage.Describe,
		metrics.Restores.Describe, metrics.RestoreDurations.Describe, metrics.ProbeDurations.Describe)
	// The agent's registerer adds its node to every series.
	describe(t, out, []string{"node"}, agent.DescribeMetrics)
	if len(out) < 30 {
		t.Fatalf("the code registers only %v", out)
	}
	return out
}

var (
	desc      = regexp.MustCompile(`^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)", .*constLabels: \{(.*)\}, variableLabels: \{(.*)\}\}$`)
	constName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
)

// describe adds to out the metrics the describers describe, with their constant and
// variable labels and the extra ones.
func describe(t *testing.T, out map[string][]string, extra []string, describers ...func(chan<- *client.Desc)) {
	t.Helper()
	ch := make(chan *client.Desc, 64)
	go func() {
		for _, d := range describers {
			d(ch)
		}
		close(ch)
	}()
	for d := range ch {
		m := desc.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		labels := slices.Clone(extra)
		for _, c := range constName.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, c[1])
		}
		if m[3] != "" {
			labels = append(labels, strings.Split(m[3], ",")...)
		}
		out[m[1]] = labels
	}
}

// seriesOf is the registered metric a series name belongs to and the labels that
// series carries: a histogram's _bucket (with le), _sum and _count are its own.
func seriesOf(reg map[string][]string, name string) (string, []string, bool) {
	if labels, ok := reg[name]; ok {
		return name, labels, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if labels, ok := reg[base]; ok {
				if suffix == "_bucket" {
					labels = append(slices.Clone(labels), "le")
				}
				return base, labels, true
			}
		}
	}
	return "", nil, false
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
