package browse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/internal/identity"
)

// The relay pod: it runs `holdfast browse-relay` in the session's namespace, listens
// on 127.0.0.1 only (kubectl port-forward reaches it; no other pod can), and passes each
// request on to the manager with its own ServiceAccount token, projected for
// TokenAudience and bound to the pod. It holds no repository key and no store
// credentials: the manager reads the store and answers only for the pod's session.
const (
	// ComponentRelay is the app.kubernetes.io/component label of relay pods.
	ComponentRelay = "browse-relay"
	// LabelSession, on a relay pod, names its session.
	LabelSession = "backup.holdfast.dev/browse-session"
	// RelaySubcommand is the holdfast command a relay pod runs.
	RelaySubcommand = "browse-relay"
	// TokenAudience is the audience of a relay pod's token: only the manager accepts it.
	TokenAudience = "holdfast-browse"
	// RelayTokenVolume is the relay pod's only volume, its projected token.
	RelayTokenVolume = "manager-token"
	// RelayTokenDir is where the relay pod's token is mounted (file "token").
	RelayTokenDir = "/var/run/secrets/holdfast/browse"
	// EnvManagerCA carries the manager's certificate authority (PEM) to the relay.
	EnvManagerCA = "HOLDFAST_MANAGER_CA"
	// relayTokenSeconds is the token's lifetime; the kubelet renews it at 80%.
	relayTokenSeconds = 600
)

// Relay flags, shared by NewRelayPod and the browse-relay command.
const (
	FlagManagerURL = "--manager-url"
	FlagServerName = "--server-name"
	FlagTokenFile  = "--token-file"
	FlagListen     = "--listen"
	FlagHealth     = "--health-listen"
)

// RelayHealthPort is where a relay pod answers its readiness probe (GET /healthz), on
// the pod's address: the kubelet probes from the node. It says only that the relay
// listens; nothing is served there.
const RelayHealthPort = 8766

// RelayPodName is <session>-relay-<hash of the session's UID>, at most 63 characters.
func RelayPodName(s *v1.BrowseSession) string {
	sum := sha256.Sum256([]byte(s.UID))
	prefix := s.Name
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-.")
	}
	return prefix + "-relay-" + hex.EncodeToString(sum[:])[:8]
}

// IsRelayPod says whether pod is one of the manager's relay pods.
func IsRelayPod(pod *corev1.Pod) bool {
	return pod.Labels[v1.LabelManagedBy] == v1.ManagedByValue && pod.Labels[restore.LabelComponent] == ComponentRelay
}

// ManagerEndpoint is where, and as whom, a relay pod reaches the manager.
type ManagerEndpoint struct {
	// URL is https://host:port of the manager's webhook server.
	URL string
	// ServerName is the name its certificate is issued for.
	ServerName string
	// CA is the certificate authority (PEM) that signs it.
	CA []byte
}

// Endpoint finds the manager for relay pods.
type Endpoint interface {
	Get(ctx context.Context) (ManagerEndpoint, error)
}

// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=services,verbs=get
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get

// ServiceEndpoint finds the manager as the agents do: its webhook Service's cluster IP
// and the caBundle of its MutatingWebhookConfiguration.
type ServiceEndpoint struct {
	Reader               client.Reader
	Namespace, Service   string
	WebhookConfiguration string
}

// Get reads the Service and the webhook configuration.
func (e ServiceEndpoint) Get(ctx context.Context) (ManagerEndpoint, error) {
	svc := &corev1.Service{}
	if err := e.Reader.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: e.Service}, svc); err != nil {
		return ManagerEndpoint{}, fmt.Errorf("finding the manager's Service %s/%s: %w", e.Namespace, e.Service, err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return ManagerEndpoint{}, fmt.Errorf("the manager's Service %s/%s has no cluster IP and port", e.Namespace, e.Service)
	}
	cfg := &admissionv1.MutatingWebhookConfiguration{}
	if err := e.Reader.Get(ctx, types.NamespacedName{Name: e.WebhookConfiguration}, cfg); err != nil {
		return ManagerEndpoint{}, fmt.Errorf("reading the manager's certificate authority from MutatingWebhookConfiguration %s: %w", e.WebhookConfiguration, err)
	}
	var ca []byte
	for _, w := range cfg.Webhooks {
		if len(w.ClientConfig.CABundle) > 0 {
			ca = w.ClientConfig.CABundle
			break
		}
	}
	if len(ca) == 0 {
		return ManagerEndpoint{}, fmt.Errorf("MutatingWebhookConfiguration %s has no caBundle yet", e.WebhookConfiguration)
	}
	return ManagerEndpoint{
		URL:        "https://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port))),
		ServerName: e.Service + "." + e.Namespace + ".svc",
		CA:         ca,
	}, nil
}

// StaticEndpoint is a fixed endpoint (a manager outside the cluster; tests).
type StaticEndpoint ManagerEndpoint

// Get returns e.
func (e StaticEndpoint) Get(context.Context) (ManagerEndpoint, error) { return ManagerEndpoint(e), nil }

// NewRelayPod builds the relay pod of session s: one container running holdfast
// browse-relay with the helper settings h, as the namespace's default ServiceAccount
// but with no token of it except the projected one for the manager, and nothing else
// mounted; Ready once the relay listens.
func NewRelayPod(s *v1.BrowseSession, name string, ep ManagerEndpoint, h restore.HelperPod) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: s.Namespace,
			Labels: map[string]string{
				v1.LabelManagedBy: v1.ManagedByValue, restore.LabelComponent: ComponentRelay,
				restore.LabelSkipRestoreWait: "true", LabelSession: identity.LabelValue(s.Name),
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ServiceAccountName:            "default",
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			ActiveDeadlineSeconds:         ptr.To(int64(ExpiresAt(s).Sub(s.CreationTimestamp.Time).Seconds()) + 60),
			PriorityClassName:             h.PriorityClassName,
			Tolerations:                   h.Tolerations,
			Containers: []corev1.Container{{
				Name:  "relay",
				Image: h.Image,
				Args: []string{RelaySubcommand,
					FlagManagerURL + "=" + ep.URL,
					FlagServerName + "=" + ep.ServerName,
					FlagTokenFile + "=" + RelayTokenDir + "/token",
					FlagListen + "=127.0.0.1:" + strconv.Itoa(v1.RelayPort),
					FlagHealth + "=:" + strconv.Itoa(RelayHealthPort),
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(RelayHealthPort)}},
					PeriodSeconds: 1, FailureThreshold: 3,
				},
				Env:             []corev1.EnvVar{{Name: EnvManagerCA, Value: string(ep.CA)}},
				Resources:       h.Resources,
				SecurityContext: h.SecurityContext,
				VolumeMounts:    []corev1.VolumeMount{{Name: RelayTokenVolume, MountPath: RelayTokenDir, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: RelayTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: TokenAudience, ExpirationSeconds: ptr.To[int64](relayTokenSeconds), Path: "token"}}},
			}}}},
		},
	}
}
