// Package dashboard builds Holdfast's Grafana dashboard (config/grafana) in Go with the
// Grafana Foundation SDK, so that its panels are typed and its queries can be checked
// against the metrics the code registers; `go generate` writes the committed JSON.
package dashboard

//go:generate go run ./cmd/holdfast-dashboard -out ../../config/grafana/holdfast-dashboard.json
