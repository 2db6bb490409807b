// Package install tests what users install and how GitOps tools read it: every
// kustomize overlay builds with the platform settings it promises, config/default is
// accepted by a real API server and re-applying it changes nothing, and the Argo CD
// health scripts and kstatus read the status Holdfast writes.
package install
