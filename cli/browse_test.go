package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/browse"
	"github.com/holdfast-dev/holdfast/controllers/restore"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// The browse half of the suite: the session controller and the manager's browse
// server run as the manager does, on a catalog whose store is a directory. The server
// is served over TLS by the test (the manager serves it on its webhook server), and
// browseClock lets a test move time past a session's ttl.
var (
	relayOptions = restore.ClaimPodOptions{Image: "holdfast:test"}
	browseServer *httptest.Server
	browseCA     []byte
	browseClock  atomic.Int64 // nanoseconds added to time.Now
)

func browseNow() time.Time { return time.Now().Add(time.Duration(browseClock.Load())) }

// startBrowse adds the browse session controller to mgr and starts the browse server.
func startBrowse(env *testenv.Env, mgr ctrl.Manager, workDir string) error {
	catalog := &storage.Catalog{Client: mgr.GetClient(), Secrets: mgr.GetAPIReader(), Namespace: testenv.OperatorNamespace,
		Pool: storage.NewPool(workDir, filepath.Join(testenv.ToolsBin(), "restic"))}
	if err := mgr.Add(catalog.Pool); err != nil {
		return err
	}
	srv := &browse.Server{Reader: mgr.GetAPIReader(), Reviewer: mgr.GetClient(), Catalog: catalog,
		Recorder: mgr.GetEventRecorder("holdfast-browse"), Now: browseNow}
	browseServer = httptest.NewUnstartedServer(srv)
	browseServer.StartTLS()
	browseCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: browseServer.Certificate().Raw})
	return (&browse.SessionReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Catalog: catalog,
		Relay:    relayOptions,
		Endpoint: browse.StaticEndpoint{URL: browseServer.URL, ServerName: "127.0.0.1", CA: browseCA},
		Now:      browseNow}).SetupWithManager(mgr)
}

// backedUp makes a storage location on a directory, a Ready kopia BackupRepository of
// ns on it (playing the repository controller: initialised with a key in a Secret of
// the operator namespace) and one snapshot of files as claim data; it returns the
// snapshot ID.
func (o *objects) backedUp(ns string, files map[string]string) string {
	o.t.Helper()
	bslName := "browse-" + ns
	dir := o.t.TempDir()
	bsl := &v1.BackupStorageLocation{ObjectMeta: metav1.ObjectMeta{Name: bslName},
		Spec: v1.BackupStorageLocationSpec{Filesystem: &v1.FilesystemLocation{Path: dir}}}
	o.create(bsl)
	o.ready(bsl, &bsl.Status.Conditions)
	store := repository.Store{Filesystem: &repository.FilesystemStore{Path: dir}}
	cfg := repository.Config{Store: store, Uploader: v1.UploaderKopia, Namespace: ns, Password: "browse-test-key",
		WorkDir: o.t.TempDir(), Owner: "agent@test"}
	if err := repository.Initialize(o.ctx, cfg); err != nil {
		o.t.Fatal(err)
	}
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: bslName + "-" + ns, Namespace: testenv.OperatorNamespace},
		Data: map[string][]byte{repository.KeySecretKey: []byte(cfg.Password)}}
	o.create(key)
	brepo := &v1.BackupRepository{ObjectMeta: metav1.ObjectMeta{Name: identity.RepositoryName(bslName, v1.UploaderKopia), Namespace: ns},
		Spec: v1.BackupRepositorySpec{StorageLocation: bslName, Uploader: v1.UploaderKopia}}
	o.create(brepo)
	brepo.Status.KeySecretName = key.Name
	o.ready(brepo, &brepo.Status.Conditions)

	src := o.t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			o.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			o.t.Fatal(err)
		}
	}
	namespace := &corev1.Namespace{}
	if err := o.e.Client.Get(o.ctx, client.ObjectKey{Name: ns}, namespace); err != nil {
		o.t.Fatal(err)
	}
	rep, err := repository.Open(o.ctx, cfg)
	if err != nil {
		o.t.Fatal(err)
	}
	defer rep.Close(context.Background()) //nolint:errcheck
	res, err := rep.Backup(o.ctx, repository.BackupRequest{Dir: src, SourcePath: identity.ClaimSourcePath("data"),
		Tags: map[string]string{identity.TagNamespaceUID: string(namespace.UID), identity.TagBackup: "data-nightly-1"}})
	if err != nil {
		o.t.Fatal(err)
	}
	return res.SnapshotID
}

// ready sets Ready=True on obj's status, as its controller would.
func (o *objects) ready(obj client.Object, conds *[]metav1.Condition) {
	o.t.Helper()
	apimeta.SetStatusCondition(conds, metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Test", Message: "ready", ObservedGeneration: obj.GetGeneration()})
	if err := o.e.Client.Status().Update(o.ctx, obj); err != nil {
		o.t.Fatal(err)
	}
}

// relayKubelet plays the kubelet for the relay pods of ns: it gives the namespace its
// default ServiceAccount, binds each relay pod to a node and marks it Running and Ready,
// and serves it where port-forward would reach it: browse-relay with a token bound to
// that pod for the manager's audience.
func (o *objects) relayKubelet(ns string) {
	o.t.Helper()
	if err := o.e.Client.Create(o.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}); err != nil {
		o.t.Fatal(err)
	}
	dialRelay = func(ctx context.Context, _ *rest.Config, namespace, name string, _ int) (string, func(), error) {
		pod := &corev1.Pod{}
		if err := o.e.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pod); err != nil {
			return "", nil, err
		}
		token, err := o.podToken(pod, browse.TokenAudience)
		if err != nil {
			return "", nil, err
		}
		tokenFile := filepath.Join(o.t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			return "", nil, err
		}
		h, err := browse.Relay{ManagerURL: browseServer.URL, ServerName: "127.0.0.1", CA: browseCA, TokenFile: tokenFile}.Handler()
		if err != nil {
			return "", nil, err
		}
		relay := httptest.NewServer(h)
		return relay.URL, relay.Close, nil
	}
	o.t.Cleanup(func() { dialRelay = portForward })
	ctx, cancel := context.WithCancel(o.ctx)
	o.t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var pods corev1.PodList
			if err := o.e.Client.List(ctx, &pods, client.InNamespace(ns)); err == nil {
				for i := range pods.Items {
					if p := &pods.Items[i]; browse.IsRelayPod(p) && p.Status.Phase != corev1.PodRunning {
						o.run(ctx, p)
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// run binds pod to node-a and marks it Running and Ready.
func (o *objects) run(ctx context.Context, p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
			Target: corev1.ObjectReference{Kind: "Node", Name: "node-a"}}
		if err := o.e.Client.SubResource("binding").Create(ctx, p, b); err != nil {
			return
		}
		if err := o.e.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return
		}
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	_ = o.e.Client.Status().Update(ctx, p)
}

// podToken is a token of pod's ServiceAccount bound to pod, for audience.
func (o *objects) podToken(pod *corev1.Pod, audience string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: pod.Namespace}}
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}
	if err := o.e.Client.SubResource("token").Create(o.ctx, sa, tr); err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// TestBrowseListsAndDownloadsARestorePoint drives snapshots, ls and get as a user
// would, against the real session controller and browse server: the restore points
// come from the store, the files through a relay pod's token, each read is an event
// naming the user, and get writes exactly the directory asked for.
func TestBrowseListsAndDownloadsARestorePoint(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	files := map[string]string{
		"config.yaml":       "replicas: 3\n",
		"data/2026/jan.csv": "a,b\n1,2\n",
		"data/2026/feb.csv": strings.Repeat("x", 300<<10),
		"data/2025/dec.csv": "old\n",
		"logs/today.log":    "started\n",
	}
	id := o.backedUp(ns, files)
	o.relayKubelet(ns)

	out, stderr, code := holdfast(t, "", "snapshots", "data", "-n", ns)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "data-nightly-1") {
		t.Fatalf("snapshots: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = holdfast(t, "", "snapshots", "data", "-n", ns, "-o", "json")
	var points []v1.BrowseRestorePoint
	if code != 0 || json.Unmarshal([]byte(out), &points) != nil || len(points) != 1 || points[0].SnapshotID != id || points[0].Uploader != v1.UploaderKopia {
		t.Fatalf("snapshots -o json: exit %d, %s", code, out)
	}

	out, stderr, code = holdfast(t, "", "ls", "data", "data", "-n", ns)
	if code != 0 || !strings.Contains(out, "2025/") || !strings.Contains(out, "2026/") {
		t.Fatalf("ls data data: exit %d\n%s%s", code, out, stderr)
	}
	to := t.TempDir()
	out, stderr, code = holdfast(t, "", "get", "data", "/data/2026/", "--to", to, "-n", ns)
	if code != 0 || !strings.Contains(out, "2 files") {
		t.Fatalf("get: exit %d\n%s%s", code, out, stderr)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(to, strings.TrimPrefix(name, "data/")))
		inside := strings.HasPrefix(name, "data/2026/")
		switch {
		case inside && (err != nil || string(got) != want):
			t.Errorf("downloaded %s: %v (%d bytes, want %d)", name, err, len(got), len(want))
		case !inside && err == nil:
			t.Errorf("%s was downloaded, but only data/2026 was asked for", name)
		}
	}
	// A single file comes back as that file.
	one := t.TempDir()
	if out, stderr, code = holdfast(t, "", "get", "data", "config.yaml", "--to", one, "-n", ns); code != 0 || !strings.Contains(out, "1 file,") {
		t.Errorf("get of a file: exit %d\n%s%s", code, out, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(one, "config.yaml")); err != nil || string(got) != files["config.yaml"] {
		t.Errorf("downloaded config.yaml = %q, %v", got, err)
	}
	var entries []v1.BrowseEntry
	out, _, code = holdfast(t, "", "ls", "data", "-n", ns, "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &entries) != nil || len(entries) != 3 || entries[0].Name != "config.yaml" || entries[1].Type != "dir" {
		t.Errorf("ls -o json of the root: exit %d, %s", code, out)
	}
	// A second get into the same place refuses to write over what is there.
	if _, stderr, code = holdfast(t, "", "get", "data", "data/2026", "--to", to, "-n", ns); code == 0 || !strings.Contains(stderr, "2026 exists") {
		t.Errorf("get over an existing directory: exit %d, %s", code, stderr)
	}
	// A path the restore point lacks is named.
	if _, stderr, code = holdfast(t, "", "get", "data", "data/2027", "--to", t.TempDir(), "-n", ns); code == 0 || !strings.Contains(stderr, "2027") {
		t.Errorf("get of a missing path: exit %d, %s", code, stderr)
	}

	// One session served them all, and it recorded each read with the user's name.
	var sessions v1.BrowseSessionList
	if err := o.e.Client.List(o.ctx, &sessions, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var open *v1.BrowseSession
	for i := range sessions.Items {
		if sessions.Items[i].Spec.SnapshotID == id {
			if open != nil {
				t.Errorf("ls and get made more than one session for snapshot %s", id)
			}
			open = &sessions.Items[i]
		}
	}
	if open == nil || open.Spec.RequestedBy != testUser {
		t.Fatalf("session of snapshot %s: %+v", id, open)
	}
	testenv.Eventually(t, "the reads recorded as events on the session", func() error {
		var evs corev1.EventList
		if err := o.e.Client.List(o.ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var notes []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == open.Name {
				notes = append(notes, e.Reason+": "+e.Message)
			}
		}
		all := strings.Join(notes, "\n")
		for _, want := range []string{"Listed: " + testUser + " listed data of snapshot " + id,
			"Downloaded: " + testUser + " downloaded data/2026 of snapshot " + id + " of /pvc/data: 2 files"} {
			if !strings.Contains(all, want) {
				return fmt.Errorf("no event %q in\n%s", want, all)
			}
		}
		return nil
	})
}

// testUser is the user of the test kubeconfig.
const testUser = "holdfast-test-admin"

// TestBrowseServesOnlyTheRelayOfALiveSession: the browse server answers only a token
// bound to the session's own relay pod, for the manager's audience, while the session
// lives; expired, the relay pod is deleted and nothing is served.
func TestBrowseServesOnlyTheRelayOfALiveSession(t *testing.T) {
	o := newObjects(t)
	ns := o.e.Namespace(t, nil)
	id := o.backedUp(ns, map[string]string{"secret.txt": "s3cr3t"})
	o.relayKubelet(ns)
	s := &v1.BrowseSession{ObjectMeta: metav1.ObjectMeta{Name: "look", Namespace: ns},
		Spec: v1.BrowseSessionSpec{Source: "data", SnapshotID: id, RequestedBy: testUser, TTL: &metav1.Duration{Duration: time.Minute}}}
	o.create(s)
	var got *v1.BrowseSession
	testenv.Eventually(t, "session Ready", func() error {
		var err error
		got, err = waitReady(o, s)
		return err
	})
	relay := &corev1.Pod{}
	if err := o.e.Client.Get(o.ctx, client.ObjectKey{Namespace: ns, Name: got.Status.RelayPod}, relay); err != nil {
		t.Fatal(err)
	}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	o.create(other)

	get := func(token, path string) (int, string) {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(browseCA)
		req, _ := http.NewRequestWithContext(o.ctx, http.MethodGet, browseServer.URL+v1.BrowsePathPrefix+v1.BrowseGet+"?path="+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := browseServer.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return resp.StatusCode, body.String()
	}
	relayToken, err := o.podToken(relay, browse.TokenAudience)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(relayToken, "secret.txt"); code != http.StatusOK || !strings.Contains(body, "s3cr3t") {
		t.Fatalf("the relay's own token: %d %q", code, body)
	}
	otherToken, err := o.podToken(other, browse.TokenAudience)
	if err != nil {
		t.Fatal(err)
	}
	wrongAudience, err := o.podToken(relay, "https://kubernetes.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := o.e.ServiceAccountToken(o.ctx, ns, "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, token, path string
		code              int
		says              string
	}{
		{"no token", "", "secret.txt", http.StatusUnauthorized, "no ServiceAccount token"},
		{"another pod's token", otherToken, "secret.txt", http.StatusForbidden, "is not a browse session's relay pod"},
		{"the relay's token for another audience", wrongAudience, "secret.txt", http.StatusUnauthorized, "not accepted"},
		{"a token bound to no pod", plain, "secret.txt", http.StatusUnauthorized, "not accepted"},
		{"a path out of the snapshot", relayToken, "../etc/passwd", http.StatusBadRequest, "../etc/passwd"},
		{"a path the snapshot lacks", relayToken, "nothere", http.StatusNotFound, "nothere"},
	} {
		if code, body := get(c.token, c.path); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.what, code, body, c.code, c.says)
		}
	}

	// Past its ttl the session is Expired, its relay pod goes, and its token is refused.
	browseClock.Store(int64(2 * time.Minute))
	t.Cleanup(func() { browseClock.Store(0) })
	if code, body := get(relayToken, "secret.txt"); code != http.StatusGone || !strings.Contains(body, "ended") {
		t.Errorf("after the ttl: %d %q", code, body)
	}
	// Touch the session so that the controller looks at it with the moved clock.
	patch := client.MergeFrom(s.DeepCopy())
	s.Annotations = map[string]string{"touch": "1"}
	if err := o.e.Client.Patch(o.ctx, s, patch); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "session Expired and its relay pod deleted", func() error {
		cur := &v1.BrowseSession{}
		if err := o.e.Client.Get(o.ctx, client.ObjectKeyFromObject(s), cur); err != nil {
			return err
		}
		if cur.Status.Phase != v1.BrowseExpired {
			return fmt.Errorf("phase %s", cur.Status.Phase)
		}
		p := &corev1.Pod{}
		if err := o.e.Client.Get(o.ctx, client.ObjectKeyFromObject(relay), p); err == nil && p.DeletionTimestamp.IsZero() {
			return fmt.Errorf("relay pod %s still there", p.Name)
		}
		return nil
	})
}

// TestBrowseRefusesASnapshotOfAnotherNamespace: a session in one namespace cannot open
// a snapshot of another namespace's repository by its ID.
func TestBrowseRefusesASnapshotOfAnotherNamespace(t *testing.T) {
	o := newObjects(t)
	victim, attacker := o.e.Namespace(t, nil), o.e.Namespace(t, nil)
	id := o.backedUp(victim, map[string]string{"secret.txt": "theirs"})
	o.backedUp(attacker, map[string]string{"mine.txt": "mine"})
	s := &v1.BrowseSession{ObjectMeta: metav1.ObjectMeta{Name: "steal", Namespace: attacker},
		Spec: v1.BrowseSessionSpec{Source: "data", SnapshotID: id, RequestedBy: testUser}}
	o.create(s)
	testenv.Eventually(t, "session Failed", func() error {
		cur := &v1.BrowseSession{}
		if err := o.e.Client.Get(o.ctx, client.ObjectKeyFromObject(s), cur); err != nil {
			return err
		}
		if cur.Status.Phase != v1.BrowseFailed || !strings.Contains(readyMessage(cur), "is not a restore point of /pvc/data that namespace "+attacker+" may read") {
			return fmt.Errorf("phase %s: %s", cur.Status.Phase, readyMessage(cur))
		}
		if cur.Status.RelayPod != "" {
			return fmt.Errorf("relay pod %s", cur.Status.RelayPod)
		}
		return nil
	})
	var pods corev1.PodList
	if err := o.e.Client.List(o.ctx, &pods, client.InNamespace(attacker)); err != nil || len(pods.Items) != 0 {
		t.Errorf("pods in the attacker's namespace: %d, %v", len(pods.Items), err)
	}
}

func waitReady(o *objects, s *v1.BrowseSession) (*v1.BrowseSession, error) {
	cur := &v1.BrowseSession{}
	if err := o.e.Client.Get(o.ctx, client.ObjectKeyFromObject(s), cur); err != nil {
		return nil, err
	}
	if cur.Status.Phase != v1.BrowseReady {
		return nil, fmt.Errorf("phase %q: %s", cur.Status.Phase, readyMessage(cur))
	}
	return cur, nil
}
