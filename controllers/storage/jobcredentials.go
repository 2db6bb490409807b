package storage

import (
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/holdfast-dev/holdfast/internal/jobcredentials"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=podvolumebackups;podvolumerestores;volumerestores;backuprepositories,verbs=get
// +kubebuilder:rbac:groups=backup.holdfast.dev,resources=backupstoragelocations,verbs=get
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=secrets,verbs=get

// SetupJobCredentials serves agents the repository key and store credentials of their
// jobs (package jobcredentials) on the manager's webhook server. Every replica serves
// it, as every replica serves the webhooks: it only reads.
func SetupJobCredentials(mgr ctrl.Manager, namespace, agentServiceAccount string) {
	mgr.GetWebhookServer().Register(jobcredentials.Path, &jobcredentials.Server{
		Reader:              mgr.GetAPIReader(),
		Reviewer:            mgr.GetClient(),
		Namespace:           namespace,
		AgentServiceAccount: agentServiceAccount,
	})
}
