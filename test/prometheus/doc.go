// Package prometheus tests config/prometheus, the kustomize component that makes a
// Prometheus Operator scrape Holdfast and alert on it: the monitors and the rule object
// decode strictly as the operator's types, and `promtool test rules` runs the unit
// tests beside this file on the rule groups exactly as `kustomize build` ships them.
package prometheus
