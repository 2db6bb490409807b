// Package controllers holds the manager's reconcilers and webhooks: storage locations,
// policies, repositories and restores. Each reconciler carries the RBAC markers it needs.
package controllers

// Leader election and events, which every manager replica needs.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=holdfast-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
