// Package multinode tells the end-to-end stories that need two nodes: each node's
// agent backs up and restores the volumes of its own node only, with credentials that
// cannot touch the other node's work, and work follows pods and claims from one node
// to the other. Its tests bring up the local cluster (test/cluster) with two nodes,
// install Holdfast with the steps of package test/e2e, and take it down again.
package multinode
