// Package monitoring exports what Holdfast's API objects say about protection as
// Prometheus metrics, computed on each scrape from the manager's informer cache: per
// protected volume, per policy, per repository and storage location, failed restores
// and the agent on each node. Nothing is kept between scrapes, so a manager restart
// loses nothing and an object that goes takes its series with it. The names are in
// internal/metrics, the meaning of each in docs/monitoring.md.
package monitoring
