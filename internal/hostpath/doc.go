// Package hostpath decides which hostPath PersistentVolumes (what the local-path
// provisioners of k3s, kind and minikube make) Holdfast backs up: those whose path lies
// strictly under a host directory an admin allows with --host-path-roots. The manager
// selects by it and the agent opens the directories by it, without following links.
package hostpath
