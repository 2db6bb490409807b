package storage

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/holdfast-dev/holdfast/internal/metrics"
)

// probesObserved is how many probes of a storage location
// holdfast_storage_location_probe_duration_seconds observed, and their total seconds.
func probesObserved(t *testing.T, location string) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := metrics.ProbeDurations.WithLabelValues(location).(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}
