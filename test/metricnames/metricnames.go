// Package metricnames lists the metrics Holdfast's code registers, with the labels of
// their series, from the collectors' descriptors: what the shipped alert rules
// (test/prometheus) and the dashboard (internal/dashboard) may read. A rule or a panel
// that reads anything else would never show data.
package metricnames

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-dev/holdfast/agent"
	"github.com/holdfast-dev/holdfast/controllers/coverage"
	"github.com/holdfast-dev/holdfast/controllers/monitoring"
	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// Manager maps the name of every metric the manager exports (the state collector,
// coverage, the counted restores and probes) to the labels of its series.
func Manager() (map[string][]string, error) {
	out := map[string][]string{}
	err := describe(out, nil,
		monitoring.New(nil, monitoring.Options{}).Describe, coverage.Describe,
		metrics.Restores.Describe, metrics.RestoreDurations.Describe, metrics.ProbeDurations.Describe)
	return out, err
}

// All is Manager with the agent's metrics, whose registerer adds the node to every
// series.
func All() (map[string][]string, error) {
	out, err := Manager()
	if err != nil {
		return nil, err
	}
	return out, describe(out, []string{"node"}, agent.DescribeMetrics)
}

// Of is the registered metric a series name belongs to: a histogram's _bucket, _sum
// and _count series are its own; "" when none.
func Of(reg map[string][]string, series string) string {
	if _, ok := reg[series]; ok {
		return series
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if name, ok := strings.CutSuffix(series, suffix); ok {
			if _, ok := reg[name]; ok {
				return name
			}
		}
	}
	return ""
}

var (
	desc      = regexp.MustCompile(`^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)", .*constLabels: \{(.*)\}, variableLabels: \{(.*)\}\}$`)
	constName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
)

// describe adds to out the metrics the describers describe, with their constant and
// variable labels and the extra ones.
func describe(out map[string][]string, extra []string, describers ...func(chan<- *prometheus.Desc)) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, d := range describers {
			d(ch)
		}
		close(ch)
	}()
	var err error
	for d := range ch {
		m := desc.FindStringSubmatch(d.String())
		if m == nil {
			err = fmt.Errorf("cannot read the descriptor %s", d)
			continue
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
	return err
}
