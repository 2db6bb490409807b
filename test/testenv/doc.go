// Package testenv starts a real kube-apiserver and etcd (envtest, with the binaries
// built by `make tools`) with Holdfast's CRDs installed, and gives each test its own
// namespace. Integration tests of every package use it; nothing here is a fake.
package testenv
