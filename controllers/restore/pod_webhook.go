package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// PodWebhookPath is where the pod webhook is served.
const PodWebhookPath = "/mutate-v1-pod-restore-wait"

// The webhook is failurePolicy=ignore, and the handler never denies a pod because of
// its own trouble: if the manager is down, slow or cannot read what it needs, pods are
// still created (without waiting for their data), rather than pod creation failing in
// the cluster. The restore then happens as a data-only restore into the running pod.
//
// Its scope, in one sentence for the docs: every pod creation except in kube-system,
// kube-public, kube-node-lease and the operator namespace, and except in a namespace
// or for a pod labelled backup.holdfast.dev/skip-restore-wait=true. The system
// namespaces and the operator's own never hold an application restored by a
// VolumeRestore, and excluding them keeps the control plane and the manager itself
// (its next pod, after a crash) independent of the manager. The label lets a platform
// team take high-churn or critical namespaces out of the webhook's path; nothing
// carries it by default, so the GitOps flow (the restore committed with the
// application) is unchanged. The operator namespace is named here as config/default
// sets it; test/install checks that every overlay excludes the namespace it installs
// the manager into.
//
// timeoutSeconds is 2: the API server waits that long on every pod creation in scope
// when the manager hangs. The handler reads the informer cache, the API server for
// what the cache may lag on (the namespace's VolumeRestores when the cache has none
// for the pod, a ReplicaSet the cache does not hold yet) and, when it adds the
// container, one ConfigMap: milliseconds. It gives up itself after handleBudget,
// so a slow read ends in an answer with a warning rather than a timeout; the price of
// a short timeout is that, under heavy load, a pod may be created without restore-wait.
//
// +kubebuilder:webhook:path=/mutate-v1-pod-restore-wait,mutating=true,failurePolicy=ignore,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=restore-wait.holdfast.dev,admissionReviewVersions=v1,reinvocationPolicy=Never,timeoutSeconds=2,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease","holdfast-system"]},{"key":"backup.holdfast.dev/skip-restore-wait","operator":"NotIn","values":["true"]}]},"objectSelector":{"matchExpressions":[{"key":"backup.holdfast.dev/skip-restore-wait","operator":"NotIn","values":["true"]}]}}`
// +kubebuilder:rbac:groups="",namespace=holdfast-system,resources=configmaps,verbs=get

// LabelSkipRestoreWait, set to "true" on a namespace or a pod, keeps the pod webhook
// from being called for the pods there (the webhook's namespaceSelector and
// objectSelector); such pods never wait in restore-wait.
const LabelSkipRestoreWait = "backup.holdfast.dev/skip-restore-wait"

// handleBudget is how long Handle works on a pod before it gives up and admits the pod
// unchanged, with a warning: less than the webhook's timeoutSeconds (2), so that the
// answer, and its warning, reach the API server before it stops waiting.
const handleBudget = 1500 * time.Millisecond

// PodWebhook adds the restore-wait init container to pods created while a
// VolumeRestore that selects them is pending, so the application never starts on a
// volume whose data is still on its way.
type PodWebhook struct {
	// Client reads VolumeRestores, PodVolumeBackups and ReplicaSets (cached).
	Client client.Reader
	// APIReader reads the helper ConfigMap in the operator namespace, and the
	// VolumeRestores and ReplicaSets that Client does not hold yet (not cached).
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
// has at least one backed-up volume to restore into it, or holds the pod behind the
// scheduling gate while such a restore cannot say yet (restoreWait). Whatever goes
// wrong on the way admits the pod unchanged, with a warning that says restore-wait was
// not added and why.
func (w *PodWebhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := w.decoder.Decode(req, pod); err != nil {
		// The one refusal, and not the webhook's own trouble: the API server sends the
		// pod it has itself decoded, validated and converted to v1, so a body that does
		// not decode as a v1 Pod did not come from an API server acting on a pod (a
		// hand-made call, or something broken in between). No real pod creation ends
		// here; admitting the request would only hide that breakage.
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	log := ctrl.LoggerFrom(ctx).WithValues("namespace", pod.Namespace, "pod", podName(pod))
	ctx, cancel := context.WithTimeout(ctx, handleBudget)
	defer cancel()
	ops, warnings, err := w.restoreWait(ctx, req.Object.Raw, pod)
	if err != nil {
		log.Error(err, "restore-wait not added; the pod is admitted unchanged")
		return admission.Allowed("restore-wait not added").WithWarnings(append(warnings,
			fmt.Sprintf("Holdfast did not add restore-wait to this pod (%v); if a VolumeRestore selects it, it starts without waiting for its data", err))...)
	}
	if len(ops) == 0 {
		return admission.Allowed("no pending VolumeRestore selects this pod")
	}
	return admission.Patched("restore-wait added", ops...).WithWarnings(warnings...)
}

// restoreWait returns the JSON patch that adds the restore-wait init containers and
// annotation to the pod, nil when no pending VolumeRestore restores a volume of it.
func (w *PodWebhook) restoreWait(ctx context.Context, raw []byte, pod *corev1.Pod) ([]jsonpatch.JsonPatchOperation, []string, error) {
	if pod.Labels[LabelSkipRestoreWait] == "true" {
		// The objectSelector keeps such pods away; a webhook configuration made by
		// hand may not have it.
		return nil, nil, nil
	}
	restores, err := w.restoresHolding(ctx, pod)
	if err != nil {
		return nil, nil, err
	}
	if !hasRestorableVolume(pod) {
		return nil, nil, nil
	}
	claimHolds, err := w.claimRestoresHolding(ctx, pod)
	if err != nil {
		return nil, nil, err
	}
	// gate holds the pod unscheduled until a restore that selects it knows what it
	// would wait for (heldpod_controller.go lets it be created again then).
	gate := false
	if len(restores) == 0 && len(claimHolds) == 0 {
		if gate, err = w.restoreMayFollow(ctx, pod.Namespace); err != nil {
			return nil, nil, err
		}
	}
	p := &planner{client: w.Client, live: w.APIReader}
	waited := restorewait.WaitedVolumes(pod)
	var warnings []string
	var helper *helperSettings
	var containers []corev1.Container
	// One marker volume for every restore-wait container added here.
	markerVolume := restorewait.NextMarkerVolumeName(pod)
	holds := make([]claimHold, 0, len(restores)+len(claimHolds))
	for _, vr := range restores {
		holds = append(holds, claimHold{vr: vr})
	}
	// A claim restore's plan is made already (claimRestoresHolding).
	holds = append(holds, claimHolds...)
	for _, hold := range holds {
		vr, plan := hold.vr, hold.plan
		if vr.Spec.ClaimSelector == nil {
			if !readyForPods(vr) {
				gate = true
				continue
			}
			src, err := sourcesFromStatus(ctx, w.Client, vr)
			if err != nil {
				return nil, nil, err
			}
			if plan, err = p.plan(ctx, vr, pod, src); err != nil {
				return nil, nil, fmt.Errorf("planning VolumeRestore %s: %w", vr.Name, err)
			}
		}
		if len(plan.Volumes) == 0 {
			continue
		}
		if helper == nil {
			h, warn, err := w.helper(ctx)
			if err != nil {
				return nil, nil, err
			}
			helper, warnings = &h, warn
		}
		containers = append(containers, restoreWaitContainer(restorewait.NextContainerName(pod, containers), string(vr.UID), plan, markerVolume, *helper))
		var vols []string
		for _, vp := range plan.Volumes {
			vols = append(vols, vp.Volume)
		}
		waited[vr.Name] = vols
	}
	if len(containers) == 0 && !gate {
		return nil, nil, nil
	}
	var annotation []byte
	if len(containers) > 0 {
		if annotation, err = json.Marshal(waited); err != nil {
			return nil, warnings, fmt.Errorf("building the %s annotation: %w", restorewait.Annotation, err)
		}
	}
	ops, err := restoreWaitPatch(raw, containers, restorewait.MarkerVolume(markerVolume), string(annotation), gate)
	if err != nil {
		return nil, warnings, fmt.Errorf("building the patch: %w", err)
	}
	return ops, warnings, nil
}

// readyForPods says whether a restore knows what a pod created now would wait for:
// the controller has seen its spec and read the store. Until then the webhook holds
// the pods it selects behind the scheduling gate rather than let them start on
// volumes whose backups are not known yet.
func readyForPods(vr *v1.VolumeRestore) bool {
	if vr.Status.ObservedGeneration != vr.Generation {
		return false
	}
	c := apimeta.FindStatusCondition(vr.Status.Conditions, v1.ConditionReady)
	return c == nil || c.Reason != ReasonReadingStore
}

// restoreHoldWindow is how long after its creation a namespace that adopts an earlier
// namespace's backups holds new pods that no restore selects yet.
const restoreHoldWindow = 30 * time.Second

// restoreMayFollow says whether a pod that no restore selects is held anyway: its
// namespace was created less than restoreHoldWindow ago and adopts the backups of an
// earlier namespace of its name (the annotation an administrator sets on a namespace
// rebuilt from Git). That is a namespace applied again with its application and its
// VolumeRestore in one step (kubectl apply -k orders the restore after the
// workloads), whose first pods are created a moment before the restore.
func (w *PodWebhook) restoreMayFollow(ctx context.Context, namespace string) (bool, error) {
	ns, err := getNamespace(ctx, w.Client, w.APIReader, namespace)
	if err != nil || ns == nil {
		return false, err
	}
	return namespaceMayRestore(ns, time.Now()), nil
}

// namespaceMayRestore is restoreMayFollow's rule, at time now.
func namespaceMayRestore(ns *corev1.Namespace, now time.Time) bool {
	return ns.Annotations[v1.AnnotationAdoptBackups] != "" && now.Before(ns.CreationTimestamp.Add(restoreHoldWindow))
}

// getNamespace reads a namespace from the cache and, when the cache does not hold it
// yet (it was just created), from the API server; nil when it does not exist.
func getNamespace(ctx context.Context, cached, live client.Reader, name string) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	err := cached.Get(ctx, types.NamespacedName{Name: name}, ns)
	if apierrors.IsNotFound(err) && live != nil {
		err = live.Get(ctx, types.NamespacedName{Name: name}, ns)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", name, err)
	}
	return ns, nil
}

// hasRestorableVolume says whether a pod has a volume a restore could write.
func hasRestorableVolume(pod *corev1.Pod) bool {
	for i := range pod.Spec.Volumes {
		if restorable(&pod.Spec.Volumes[i]) {
			return true
		}
	}
	return false
}

// restoresHolding lists the VolumeRestores that take pod: in its namespace, selecting
// it, not ended, not being deleted, and within their pending deadline. It reads the
// cache and, when the cache has none, the API server: a restore applied together with
// the application (kubectl apply -k, a GitOps sync) is created a moment before the
// pods, and the cache may not have it yet. In a namespace without restores that costs
// one uncached list per pod creation.
func (w *PodWebhook) restoresHolding(ctx context.Context, pod *corev1.Pod) ([]*v1.VolumeRestore, error) {
	var cached v1.VolumeRestoreList
	if err := w.Client.List(ctx, &cached, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the VolumeRestores of namespace %s: %w", pod.Namespace, err)
	}
	now := time.Now()
	if out := holding(cached.Items, pod, now); len(out) > 0 || w.APIReader == nil {
		return out, nil
	}
	var live v1.VolumeRestoreList
	if err := w.APIReader.List(ctx, &live, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the VolumeRestores of namespace %s from the API server: %w", pod.Namespace, err)
	}
	return holding(live.Items, pod, now), nil
}

// holding keeps the restores that take pod at time now.
func holding(restores []v1.VolumeRestore, pod *corev1.Pod, now time.Time) []*v1.VolumeRestore {
	var out []*v1.VolumeRestore
	for i := range restores {
		vr := &restores[i]
		if vr.Status.Phase.IsFinal() || !vr.DeletionTimestamp.IsZero() || !now.Before(vr.PendingDeadlineOf()) {
			continue
		}
		if vr.Spec.ClaimSelector != nil {
			// It restores claims, through writer pods, and holds no pod: its empty
			// podSelector would select them all.
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&vr.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, vr)
	}
	return out
}

// restoreWaitPatch adds containers at the front of spec.initContainers, their marker
// volume at the end of spec.volumes and the restore-wait annotation (when there are
// containers), and the scheduling gate (when gate is set), by JSON patch operations on
// the pod as the API server sent it (raw) and on nothing else. Computing the patch as the difference to the pod re-encoded
// from Go types would remove every field this manager's k8s.io/api does not know (a
// newer API server's pod fields), so the patch never touches anything but these
// places.
func restoreWaitPatch(raw []byte, containers []corev1.Container, markerVolume corev1.Volume, annotation string, gate bool) ([]jsonpatch.JsonPatchOperation, error) {
	var obj struct {
		Metadata json.RawMessage `json:"metadata"`
		Spec     json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	var spec struct {
		InitContainers  json.RawMessage `json:"initContainers"`
		SchedulingGates json.RawMessage `json:"schedulingGates"`
		Volumes         json.RawMessage `json:"volumes"`
	}
	if !present(obj.Spec) {
		return nil, errors.New("the pod has no spec")
	}
	if err := json.Unmarshal(obj.Spec, &spec); err != nil {
		return nil, fmt.Errorf("reading spec: %w", err)
	}
	var ops []jsonpatch.JsonPatchOperation
	gateOp := corev1.PodSchedulingGate{Name: restorewait.SchedulingGate}
	switch {
	case !gate:
	case present(spec.SchedulingGates):
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/schedulingGates/-", gateOp))
	default:
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/schedulingGates", []corev1.PodSchedulingGate{gateOp}))
	}
	if len(containers) == 0 {
		return ops, nil
	}
	if present(spec.InitContainers) {
		// Add at index 0, 1, ...: each shifts the pod's own init containers back.
		for i, c := range containers {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/initContainers/"+strconv.Itoa(i), c))
		}
	} else {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/initContainers", containers))
	}
	if present(spec.Volumes) {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/volumes/-", markerVolume))
	} else {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/volumes", []corev1.Volume{markerVolume}))
	}

	key := restorewait.Annotation
	var meta struct {
		Annotations json.RawMessage `json:"annotations"`
	}
	if present(obj.Metadata) {
		if err := json.Unmarshal(obj.Metadata, &meta); err != nil {
			return nil, fmt.Errorf("reading metadata: %w", err)
		}
	}
	switch {
	case present(meta.Annotations):
		// "add" on an existing member replaces its value.
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escapePointer(key), annotation))
	case present(obj.Metadata):
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{key: annotation}))
	default:
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata", map[string]any{"annotations": map[string]string{key: annotation}}))
	}
	return ops, nil
}

// present says whether a JSON member was sent with a value other than null.
func present(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && !bytes.Equal(v, []byte("null"))
}

// escapePointer escapes one reference token of a JSON pointer (RFC 6901).
func escapePointer(token string) string {
	return strings.ReplaceAll(strings.ReplaceAll(token, "~", "~0"), "/", "~1")
}

// podName names a pod in a log line; at admission a pod may have only generateName.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}

// helper reads the restore-helper ConfigMap. A missing ConfigMap means the defaults;
// one that cannot be read is an error, not the defaults: the administrator may have set
// an image the nodes can pull or a securityContext the namespace's policy requires,
// and a container made without them could keep the pod from starting.
func (w *PodWebhook) helper(ctx context.Context) (helperSettings, []string, error) {
	cm := &corev1.ConfigMap{}
	err := w.APIReader.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: HelperConfigMapName}, cm)
	switch {
	case apierrors.IsNotFound(err):
		h, warnings := helperFromConfigMap(nil, w.Image)
		return h, warnings, nil
	case err != nil:
		return helperSettings{}, nil, fmt.Errorf("reading ConfigMap %s/%s: %w", w.Namespace, HelperConfigMapName, err)
	}
	h, warnings := helperFromConfigMap(cm, w.Image)
	return h, warnings, nil
}

// restoreWaitContainer is the init container that holds a pod until restoreUID has
// restored the volumes of plan, reading its markers in the pod's volume markerVolume,
// made as the restore-helper settings h say.
func restoreWaitContainer(name, restoreUID string, plan podPlan, markerVolume string, h helperSettings) corev1.Container {
	var volumes []string
	for _, vp := range plan.Volumes {
		volumes = append(volumes, vp.Volume)
	}
	return restorewait.Container(name, restoreUID, volumes, markerVolume, h.Deadline, corev1.Container{
		Image:           h.Image,
		Resources:       h.Resources,
		SecurityContext: h.SecurityContext,
	})
}
