package restore

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// webhookFixture is a namespace with a pending VolumeRestore that selects pods labelled
// app=solo and a completed backup of the volume "data" of the bare pod "solo": a pod
// created with that name and volume gets restore-wait.
func webhookFixture() []client.Object {
	return []client.Object{
		&v1.VolumeRestore{
			ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop", UID: "vr-uid", CreationTimestamp: metav1.Now()},
			Spec:       v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}}, Source: &v1.RestoreSource{Latest: true}},
		},
		&v1.PodVolumeBackup{
			ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "shop"},
			Spec:       v1.PodVolumeBackupSpec{SourcePath: "/pod/solo/data"},
			Status:     v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: "k1", StartTime: &metav1.Time{Time: time.Now()}},
		},
	}
}

// failingReader answers like inner, except that reading the named kind fails with err.
type failingReader struct {
	client.Reader
	kind string
	err  error
}

func (r failingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if r.kind == kindName(obj) {
		return r.err
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r failingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if r.kind == kindName(list) {
		return r.err
	}
	return r.Reader.List(ctx, list, opts...)
}

func kindName(obj runtime.Object) string {
	switch obj.(type) {
	case *v1.VolumeRestoreList:
		return "VolumeRestoreList"
	case *v1.PodVolumeBackupList:
		return "PodVolumeBackupList"
	case *corev1.ConfigMap:
		return "ConfigMap"
	}
	return ""
}

func newTestWebhook(reader, apiReader client.Reader) *PodWebhook {
	return &PodWebhook{Client: reader, APIReader: apiReader, Namespace: operatorNamespace, Image: "holdfast:test",
		decoder: admission.NewDecoder(testenv.Scheme())}
}

func podRequest(t *testing.T, raw string) admission.Request {
	t.Helper()
	if !json.Valid([]byte(raw)) {
		t.Fatalf("test pod is not JSON: %s", raw)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "req",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "shop",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: []byte(raw)},
	}}
}

const soloPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"}},
	"spec":{"containers":[{"name":"app","image":"busybox"}],"volumes":[{"name":"data","emptyDir":{}}]}}`

// Whatever goes wrong inside the handler, the pod is admitted unchanged and its creator
// is told that restore-wait was not added, and why.
func TestWebhookAdmitsThePodWhenItCannotDecide(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, HelperConfigMapName)
	for _, tc := range []struct {
		name      string
		reader    func(client.Reader) client.Reader
		apiReader func(client.Reader) client.Reader
		ctx       func() context.Context
		why       string
	}{
		{name: "listing VolumeRestores fails",
			reader: func(c client.Reader) client.Reader {
				return failingReader{c, "VolumeRestoreList", errors.New("etcdserver: request timed out")}
			},
			why: "request timed out"},
		{name: "the cache has not started",
			reader: func(c client.Reader) client.Reader {
				return failingReader{c, "VolumeRestoreList", errors.New("the cache is not started, can not read objects")}
			},
			why: "cache is not started"},
		{name: "listing the backups fails",
			reader: func(c client.Reader) client.Reader {
				return failingReader{c, "PodVolumeBackupList", apierrors.NewServiceUnavailable("try later")}
			},
			why: "PodVolumeBackups"},
		{name: "the helper ConfigMap cannot be read",
			apiReader: func(c client.Reader) client.Reader {
				return failingReader{c, "ConfigMap", apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, HelperConfigMapName, errors.New("no"))}
			},
			why: "reading ConfigMap holdfast-system/holdfast-restore-helper"},
		{name: "the request is given up",
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			reader: func(c client.Reader) client.Reader {
				// A cache that is still syncing waits for the context.
				return ctxReader{c}
			},
			why: "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(webhookFixture()...).Build()
			var reader, apiReader client.Reader = base, failingReader{base, "ConfigMap", notFound}
			if tc.reader != nil {
				reader = tc.reader(base)
			}
			if tc.apiReader != nil {
				apiReader = tc.apiReader(base)
			}
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			w := newTestWebhook(reader, apiReader)
			resp := w.Handle(ctx, podRequest(t, soloPod))
			if !resp.Allowed {
				t.Fatalf("the pod was refused (%v): the webhook must never deny a pod because of its own trouble", resp.Result)
			}
			if len(resp.Patches) != 0 {
				t.Errorf("patches %v, want the pod unchanged", resp.Patches)
			}
			if len(resp.Warnings) == 0 || !strings.Contains(strings.Join(resp.Warnings, "\n"), "did not add restore-wait") ||
				!strings.Contains(strings.Join(resp.Warnings, "\n"), tc.why) {
				t.Errorf("warnings %q, want one that says restore-wait was not added because of %q", resp.Warnings, tc.why)
			}
		})
	}

	t.Run("a body that is not a pod", func(t *testing.T) {
		base := fake.NewClientBuilder().WithScheme(testenv.Scheme()).Build()
		resp := newTestWebhook(base, base).Handle(context.Background(), podRequest(t, `{"apiVersion":"v1","kind":"Pod","spec":{"containers":"app"}}`))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != 400 {
			t.Errorf("response %+v, want 400 for a request no API server sends", resp.AdmissionResponse)
		}
	})
}

// ctxReader fails as a cache read does when the context ends before it answers.
type ctxReader struct{ client.Reader }

func (r ctxReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.Reader.List(ctx, list, opts...)
}

// A pod object the patch cannot be built on is an error (which Handle turns into an
// admission with a warning), not a patch that replaces what is there.
func TestRestoreWaitPatchNeedsASpec(t *testing.T) {
	c := []corev1.Container{{Name: restorewait.ContainerName}}
	markers := restorewait.MarkerVolume(restorewait.MarkerVolumeName)
	for _, raw := range []string{`{"metadata":{}}`, `{"spec":null}`, `{"spec":[]}`, `{"metadata":[],"spec":{}}`, `[]`} {
		if ops, err := restoreWaitPatch([]byte(raw), c, markers, "{}", false); err == nil {
			t.Errorf("%s: patch %v, want an error", raw, ops)
		}
	}
	// A pod without metadata gets it, with the annotation; one without volumes gets
	// the list, with the marker volume.
	ops, err := restoreWaitPatch([]byte(`{"spec":{}}`), c, markers, "{}", false)
	if err != nil || len(ops) != 3 || ops[1].Path != "/spec/volumes" || ops[2].Path != "/metadata" {
		t.Errorf("patch %v (%v), want initContainers, volumes and metadata added", ops, err)
	}
	ops, err = restoreWaitPatch([]byte(`{"metadata":{"annotations":{}},"spec":{"volumes":[]}}`), c, markers, "{}", false)
	if err != nil || len(ops) != 3 || ops[1].Path != "/spec/volumes/-" || ops[2].Path != "/metadata/annotations/backup.holdfast.dev~1restore-wait" {
		t.Errorf("patch %v (%v), want the volume appended and the annotation added by an escaped pointer", ops, err)
	}
}

// The patch adds the init container and the annotation and touches nothing else, so
// pod fields this manager's API types do not know survive the webhook.
func TestWebhookPatchKeepsUnknownPodFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		// wantInits are the init container names after the patch.
		wantInits []string
		// wantMarkers is the name of the marker volume the patch adds.
		wantMarkers string
	}{
		{"no init containers, no annotations",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"}},
			"spec":{"someFutureField":{"enabled":true},
				"containers":[{"name":"app","image":"busybox","someFutureField":"keep-me"}],
				"volumes":[{"name":"data","emptyDir":{},"someFutureField":3}]}}`,
			[]string{restorewait.ContainerName}, restorewait.MarkerVolumeName},
		{"init containers and annotations of its own",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"},"annotations":{"team":"a"},"someFutureField":"x"},
			"spec":{"someFutureField":{"enabled":true},
				"initContainers":[{"name":"setup","image":"busybox","someFutureField":"keep-me-too"}],
				"containers":[{"name":"app","image":"busybox","someFutureField":"keep-me"}],
				"volumes":[{"name":"data","emptyDir":{}}]}}`,
			[]string{restorewait.ContainerName, "setup"}, restorewait.MarkerVolumeName},
		{"an empty init container list and a null annotations map",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"},"annotations":null},
			"spec":{"initContainers":[],"someFutureField":1,"containers":[{"name":"app","image":"busybox"}],"volumes":[{"name":"data","emptyDir":{}}]}}`,
			[]string{restorewait.ContainerName}, restorewait.MarkerVolumeName},
		{"a copied pod that already has a container of that name",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"}},
			"spec":{"initContainers":[{"name":"holdfast-restore-wait","image":"busybox"}],"containers":[{"name":"app","image":"busybox"}],"volumes":[{"name":"data","emptyDir":{}}]}}`,
			[]string{restorewait.ContainerName + "-2", restorewait.ContainerName}, restorewait.MarkerVolumeName},
		// The pod's own names are never taken: a volume of that name, and a mount of
		// one it does not declare (its container would mount the marker volume).
		{"a pod that uses the marker volume's names",
			`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","namespace":"shop","labels":{"app":"solo"}},
			"spec":{"containers":[{"name":"app","image":"busybox","volumeMounts":[{"name":"holdfast-restore-markers-2","mountPath":"/m"}]}],
				"volumes":[{"name":"data","emptyDir":{}},{"name":"holdfast-restore-markers","emptyDir":{}}]}}`,
			[]string{restorewait.ContainerName}, restorewait.MarkerVolumeName + "-3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(webhookFixture()...).Build()
			w := newTestWebhook(base, failingReader{base, "ConfigMap", apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, HelperConfigMapName)})
			resp := w.Handle(context.Background(), podRequest(t, tc.raw))
			if !resp.Allowed || len(resp.Patches) == 0 {
				t.Fatalf("response %+v, want the pod patched", resp.AdmissionResponse)
			}
			for _, op := range resp.Patches {
				if op.Operation != "add" || !(strings.HasPrefix(op.Path, "/spec/initContainers") || op.Path == "/spec/volumes/-" || strings.HasPrefix(op.Path, "/metadata/annotations")) {
					t.Errorf("patch operation %s %s: the webhook may only add init containers, the marker volume and its annotation", op.Operation, op.Path)
				}
			}
			ops, err := json.Marshal(resp.Patches)
			if err != nil {
				t.Fatal(err)
			}
			patch, err := jsonpatchapply.DecodePatch(ops)
			if err != nil {
				t.Fatalf("the patch does not decode: %v\n%s", err, ops)
			}
			patched, err := patch.Apply([]byte(tc.raw))
			if err != nil {
				t.Fatalf("the patch does not apply to the pod: %v\n%s", err, ops)
			}
			var want, got map[string]any
			_ = json.Unmarshal([]byte(tc.raw), &want)
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			// Every field of the original is still there, unknown ones included.
			for _, p := range [][]string{{"spec", "someFutureField"}, {"metadata", "someFutureField"}, {"spec", "containers", "0", "someFutureField"},
				{"spec", "volumes", "0", "someFutureField"}, {"metadata", "annotations", "team"}} {
				if w, ok := dig(want, p...); ok {
					if g, _ := dig(got, p...); !jsonEqual(w, g) {
						t.Errorf("%s: %v after the patch, %v before", strings.Join(p, "."), g, w)
					}
				}
			}
			if w, ok := dig(want, "spec", "initContainers", "0", "someFutureField"); ok {
				if g, _ := dig(got, "spec", "initContainers", "1", "someFutureField"); !jsonEqual(w, g) {
					t.Errorf("the pod's own init container lost someFutureField: %v", g)
				}
			}
			var pod corev1.Pod
			if err := json.Unmarshal(patched, &pod); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range pod.Spec.InitContainers {
				names = append(names, c.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.wantInits, ",") {
				t.Errorf("init containers %v, want %v", names, tc.wantInits)
			}
			if got := pod.Annotations[v1.AnnotationRestoreWait]; got != `{"r":["data"]}` {
				t.Errorf("annotation %s = %q", v1.AnnotationRestoreWait, got)
			}
			// The marker volume is added, memory-backed, and only restore-wait mounts
			// it, read-only, where its --marker-dir says.
			var vols []string
			for _, v := range pod.Spec.Volumes {
				vols = append(vols, v.Name)
			}
			if want := restorewait.MarkerVolume(tc.wantMarkers); !equality.Semantic.DeepEqual(pod.Spec.Volumes[len(pod.Spec.Volumes)-1], want) {
				t.Errorf("volumes %v, want %+v last", vols, want)
			}
			if got, err := restorewait.MarkerVolumeOf(&pod, "vr-uid"); got != tc.wantMarkers || err != nil {
				t.Errorf("MarkerVolumeOf = %q, %v; want %s", got, err, tc.wantMarkers)
			}
			wait := pod.Spec.InitContainers[0]
			if !slices.Contains(wait.Args, "--"+restorewait.FlagMarkerDir) ||
				!slices.ContainsFunc(wait.VolumeMounts, func(m corev1.VolumeMount) bool {
					return equality.Semantic.DeepEqual(m, corev1.VolumeMount{Name: tc.wantMarkers, MountPath: restorewait.MarkerMountPath, ReadOnly: true})
				}) {
				t.Errorf("restore-wait args %v mounts %+v, want the marker volume", wait.Args, wait.VolumeMounts)
			}
			for _, c := range append(pod.Spec.InitContainers[1:], pod.Spec.Containers...) {
				for _, m := range c.VolumeMounts {
					if m.Name == tc.wantMarkers {
						t.Errorf("container %s mounts the marker volume", c.Name)
					}
				}
			}
		})
	}
}

func dig(v any, path ...string) (any, bool) {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[p]; !ok {
				return nil, false
			}
		case []any:
			i := int(p[0] - '0')
			if len(p) != 1 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Pods that opt out by label are left alone even by a webhook configuration without
// the objectSelector.
func TestWebhookLeavesOptedOutPodsAlone(t *testing.T) {
	base := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(webhookFixture()...).Build()
	w := newTestWebhook(base, base)
	raw := strings.Replace(soloPod, `"labels":{"app":"solo"}`, `"labels":{"app":"solo","`+LabelSkipRestoreWait+`":"true"}`, 1)
	if resp := w.Handle(context.Background(), podRequest(t, raw)); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("response %+v, want the opted-out pod admitted unchanged", resp.AdmissionResponse)
	}
}

// webhookPod is a pod of namespace shop labelled app=web with the emptyDir "data",
// controlled by owner, with spec (JSON members) added.
func webhookPod(owner, spec string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","namespace":"shop","labels":{"app":"web"},
	"ownerReferences":[` + owner + `]},
	"spec":{` + spec + `"containers":[{"name":"app","image":"busybox"}],"volumes":[{"name":"data","emptyDir":{}}]}}`
}

func webRestore() *v1.VolumeRestore {
	return &v1.VolumeRestore{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "vr-web", CreationTimestamp: metav1.Now()},
		Spec:       v1.VolumeRestoreSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Source: &v1.RestoreSource{Latest: true}},
	}
}

func completedBackup(name, path string) *v1.PodVolumeBackup {
	return &v1.PodVolumeBackup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       v1.PodVolumeBackupSpec{SourcePath: path},
		Status:     v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, SnapshotID: "k-" + name, StartTime: &metav1.Time{Time: time.Now()}},
	}
}

// waitsFor says whether the webhook's answer holds the pod in restore-wait for the
// volume data.
func waitsFor(t *testing.T, resp admission.Response) bool {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("the pod was refused: %v", resp.Result)
	}
	for _, op := range resp.Patches {
		if strings.HasPrefix(op.Path, "/spec/initContainers") {
			raw, _ := json.Marshal(op.Value)
			return strings.Contains(string(raw), restorewait.ContainerName) && strings.Contains(string(raw), restorewait.MountPath("data"))
		}
	}
	return false
}

// The GitOps flow applies the Deployment and the restore together: the Deployment's
// brand-new ReplicaSet, and the restore itself, may not be in the manager's cache yet
// when the first pods are admitted. The webhook then reads them from the API server,
// so the pod's source identity is the Deployment's and it waits for its data.
func TestWebhookReadsWhatTheCacheDoesNotHoldYet(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5d9f", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep-uid", Controller: ptr.To(true)}}}}
	owner := `{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d9f","uid":"rs-uid","controller":true}`
	backup := completedBackup("b", "/deployment/web/data")
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, HelperConfigMapName)
	for _, tc := range []struct {
		name        string
		cached, api []client.Object
	}{
		{"the ReplicaSet is not cached yet", []client.Object{webRestore(), backup}, []client.Object{webRestore(), backup, rs}},
		{"the VolumeRestore is not cached yet", []client.Object{backup, rs}, []client.Object{webRestore(), backup, rs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(tc.cached...).Build()
			api := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(tc.api...).Build()
			w := newTestWebhook(cache, failingReader{api, "ConfigMap", notFound})
			if resp := w.Handle(context.Background(), podRequest(t, webhookPod(owner, ""))); !waitsFor(t, resp) {
				t.Errorf("the pod does not wait for its data: %+v", resp.AdmissionResponse)
			}
		})
	}
}

// A DaemonSet pod is admitted before it is scheduled: its node is in the required node
// affinity the DaemonSet controller gives it, and its backups are per node.
func TestWebhookHoldsADaemonSetPodBeforeItIsScheduled(t *testing.T) {
	owner := `{"apiVersion":"apps/v1","kind":"DaemonSet","name":"collector","uid":"ds-uid","controller":true}`
	affinity := `"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[
		{"matchFields":[{"key":"metadata.name","operator":"In","values":["node-7"]}]}]}}},`
	base := fake.NewClientBuilder().WithScheme(testenv.Scheme()).
		WithObjects(webRestore(), completedBackup("on-7", "/daemonset/collector/node-7/data"), completedBackup("on-8", "/daemonset/collector/node-8/data")).Build()
	w := newTestWebhook(base, failingReader{base, "ConfigMap", apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, HelperConfigMapName)})
	if resp := w.Handle(context.Background(), podRequest(t, webhookPod(owner, affinity))); !waitsFor(t, resp) {
		t.Errorf("the DaemonSet pod for node-7 does not wait for its data: %+v", resp.AdmissionResponse)
	}
}

func TestNodeFromAffinity(t *testing.T) {
	term := func(fields ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchFields: fields}
	}
	name := func(op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: op, Values: values}
	}
	for _, tc := range []struct {
		name  string
		terms []corev1.NodeSelectorTerm
		want  string
	}{
		{"no terms", nil, ""},
		{"the DaemonSet controller's term", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpIn, "n1"))}, "n1"},
		{"every term names the node", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpIn, "n1")), term(name(corev1.NodeSelectorOpIn, "n1"))}, "n1"},
		{"terms name two nodes", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpIn, "n1")), term(name(corev1.NodeSelectorOpIn, "n2"))}, ""},
		{"a term without the node", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpIn, "n1")), {}}, ""},
		{"two values", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpIn, "n1", "n2"))}, ""},
		{"NotIn", []corev1.NodeSelectorTerm{term(name(corev1.NodeSelectorOpNotIn, "n1"))}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{}
			if tc.terms != nil {
				pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: tc.terms}}}
			}
			if got := nodeFromAffinity(pod); got != tc.want {
				t.Errorf("nodeFromAffinity = %q, want %q", got, tc.want)
			}
		})
	}
}
