package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// PodWebhookPath is where the pod webhook is served.
const PodWebhookPath = "/mutate-v1-pod-restore-wait"

// RestoreWaitContainer is the name of the init container the webhook adds (with a
// numeric suffix when two restores match the same pod).
const RestoreWaitContainer = "holdfast-restore-wait"

// restoreMountRoot is where the init container mounts the volumes it waits for.
const restoreMountRoot = "/holdfast-restore"

// The webhook is failurePolicy=ignore: if the manager is down, pods are still created
// (without waiting for their data), rather than every pod creation in the cluster
// failing. The restore then happens as a data-only restore into the running pod.
//
// +kubebuilder:webhook:path=/mutate-v1-pod-restore-wait,mutating=true,failurePolicy=ignore,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=restore-wait.holdfast.dev,admissionReviewVersions=v1,reinvocationPolicy=Never,timeoutSeconds=5
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=configmaps,verbs=get

// PodWebhook adds the restore-wait init container to pods created while a
// VolumeRestore that selects them is pending, so the application never starts on a
// volume whose data is still on its way.
type PodWebhook struct {
	// Client reads VolumeRestores, PodVolumeBackups and ReplicaSets (cached).
	Client client.Reader
	// APIReader reads the helper ConfigMap in the operator namespace (not cached).
	APIReader client.Reader
	// Namespace is the operator namespace.
	Namespace string
	// Image is the restore-wait image unless the ConfigMap names one: the manager's own.
	Image   string
	decoder admission.Decoder
}

// SetupWithManager registers the webhook on the manager's webhook server.
func (w *PodWebhook) SetupWithManager(mgr ctrl.Manager) {
	w.decoder = admission.NewDecoder(mgr.GetScheme())
	mgr.GetWebhookServer().Register(PodWebhookPath, &webhook.Admission{Handler: w})
}

// Handle adds one init container per pending VolumeRestore that selects the pod and
// has at least one backed-up volume to restore into it.
func (w *PodWebhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := w.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	var restores v1.VolumeRestoreList
	if err := w.Client.List(ctx, &restores, client.InNamespace(pod.Namespace)); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	p := &planner{client: w.Client}
	waited := waitedVolumes(pod)
	var warnings []string
	var helper *helperSettings
	added := 0
	for i := range restores.Items {
		vr := &restores.Items[i]
		if isFinal(vr.Status.Phase) || !vr.DeletionTimestamp.IsZero() {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&vr.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		var backups v1.PodVolumeBackupList
		if err := w.Client.List(ctx, &backups, client.InNamespace(sourceNamespace(vr))); err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		plan, err := p.plan(ctx, vr, pod, backups.Items)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		if len(plan.Volumes) == 0 {
			continue
		}
		if helper == nil {
			h, warn := w.helper(ctx)
			helper, warnings = &h, warn
		}
		name := RestoreWaitContainer
		if added > 0 {
			name += "-" + strconv.Itoa(added+1)
		}
		c := restoreWaitContainer(name, string(vr.UID), plan, *helper)
		pod.Spec.InitContainers = append([]corev1.Container{c}, pod.Spec.InitContainers...)
		var vols []string
		for _, vp := range plan.Volumes {
			vols = append(vols, vp.Volume)
		}
		waited[vr.Name] = vols
		added++
	}
	if added == 0 {
		return admission.Allowed("no pending VolumeRestore selects this pod")
	}
	raw, _ := json.Marshal(waited)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[v1.AnnotationRestoreWait] = string(raw)
	patched, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	resp := admission.PatchResponseFromRaw(req.Object.Raw, patched)
	resp.Warnings = warnings
	return resp
}

func (w *PodWebhook) helper(ctx context.Context) (helperSettings, []string) {
	cm := &corev1.ConfigMap{}
	err := w.APIReader.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: HelperConfigMapName}, cm)
	switch {
	case apierrors.IsNotFound(err):
		return helperFromConfigMap(nil, w.Image)
	case err != nil:
		h, _ := helperFromConfigMap(nil, w.Image)
		return h, []string{fmt.Sprintf("reading ConfigMap %s/%s failed, using the default restore-wait settings: %v", w.Namespace, HelperConfigMapName, err)}
	}
	return helperFromConfigMap(cm, w.Image)
}

func restoreWaitContainer(name, restoreUID string, plan podPlan, h helperSettings) corev1.Container {
	args := []string{"restore-wait", "--restore-uid", restoreUID}
	var mounts []corev1.VolumeMount
	for _, vp := range plan.Volumes {
		dir := path.Join(restoreMountRoot, vp.Volume)
		args = append(args, "--volume", dir)
		mounts = append(mounts, corev1.VolumeMount{Name: vp.Volume, MountPath: dir})
	}
	return corev1.Container{
		Name:                     name,
		Image:                    h.Image,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Args:                     args,
		VolumeMounts:             mounts,
		Resources:                h.Resources,
		SecurityContext:          h.SecurityContext,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}
