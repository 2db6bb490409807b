// Package e2e holds the steps of Holdfast's end-to-end stories on the local cluster
// (test/cluster): install with `kubectl apply -k kustomize/local`, deploy the sample
// application, back it up with a policy, damage it and restore it. The e2e tests in
// this package and `make demo` (test/demo) run the same steps.
package e2e
