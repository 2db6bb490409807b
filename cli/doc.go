// Package cli is kubectl holdfast: the kubectl plugin built into the holdfast binary
// (run as kubectl-holdfast, or as holdfast kubectl). It answers from the API server
// only, with the controllers' own selection and coverage code (docs/cli.md).
package cli
