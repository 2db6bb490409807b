package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// createWatch sees the manager's PodVolumeBackup creates: how many of each name were
// sent and answered 201, and how many were in flight at once. The first `gather`
// creates wait until that many are in flight together (or until barrierWait passed,
// after which nothing waits): creates sent one after another never get there.
type createWatch struct {
	next   http.RoundTripper
	gather int

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	arrived     int
	ready       chan struct{}
	readyOnce   sync.Once
	posts       map[string]int
	createdOK   map[string]int
}

const barrierWait = 15 * time.Second

func newCreateWatch(gather int) *createWatch {
	return &createWatch{gather: gather, ready: make(chan struct{}), posts: map[string]int{}, createdOK: map[string]int{}}
}

func (w *createWatch) wrap(next http.RoundTripper) http.RoundTripper { w.next = next; return w }

func (w *createWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/podvolumebackups") || req.Body == nil {
		return w.next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	var obj metav1.PartialObjectMetadata
	_ = json.Unmarshal(body, &obj)
	key := obj.Namespace + "/" + obj.Name

	w.mu.Lock()
	w.posts[key]++
	w.inFlight++
	w.maxInFlight = max(w.maxInFlight, w.inFlight)
	w.arrived++
	wait := w.arrived <= w.gather
	if w.inFlight >= w.gather {
		w.readyOnce.Do(func() { close(w.ready) })
	}
	w.mu.Unlock()
	if wait {
		select {
		case <-w.ready:
		case <-time.After(barrierWait):
			w.readyOnce.Do(func() { close(w.ready) })
		}
	}
	resp, err := w.next.RoundTrip(req)
	w.mu.Lock()
	w.inFlight--
	if err == nil && resp.StatusCode == http.StatusCreated {
		w.createdOK[key]++
	}
	w.mu.Unlock()
	return resp, err
}

func (w *createWatch) counts() (maxInFlight int, posts, createdOK map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	posts, createdOK = map[string]int{}, map[string]int{}
	for k, v := range w.posts {
		posts[k] = v
	}
	for k, v := range w.createdOK {
		createdOK[k] = v
	}
	return w.maxInFlight, posts, createdOK
}

// A run creates a policy's PodVolumeBackups with several creates in flight at once
// (one after another, 10,000 creates cost 10,000 round trips while the API server
// idles), each exactly once, and a create the API server refuses (a ResourceQuota in
// namespace a) still surfaces as CreateFailed, in the Reconciling condition and in a
// BackupCreateFailed event: the run is not reported done. A namespace whose
// BackupRepository the API server refuses (c) fails its backups with that refusal and
// gets none, while the other namespaces' backups go ahead.
func TestARunCreatesItsBackupsConcurrentlyEachOnce(t *testing.T) {
	watch := newCreateWatch(4)
	e := startManagerWrapped(t, Options{}, watch.wrap)
	ctx := t.Context()
	wa := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	wb := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	wc := &workload{t: t, e: e, ctx: ctx, ns: e.Namespace(t, nil)}
	wa.denyBackups()
	wa.pod("app-1", "node-a", corev1.PodRunning, nil, emptyDir("data"))
	wc.denyRepositories()
	wc.pod("app-1", "node-a", corev1.PodRunning, nil, emptyDir("data"), emptyDir("logs"))
	const inB = 8
	for i := range inB {
		wb.pod(fmt.Sprintf("app-%d", i), "node-a", corev1.PodRunning, nil, emptyDir("data"), emptyDir("logs"))
	}
	p := newPolicy("concurrent-"+wa.ns, wa.ns)
	p.Spec.Selector.Namespaces = fmt.Sprintf("namespace.metadata.name in [%q, %q, %q]", wa.ns, wb.ns, wc.ns)
	wa.create(p)
	eventually(t, "every volume selected", func() error {
		if n := getPolicy(t, e, ctx, p.Name).Status.SelectedVolumes; n != 1+2*inB+2 {
			return fmt.Errorf("%d volumes selected", n)
		}
		return nil
	})
	setRunNow(t, e, ctx, p.Name, "concurrent-1")

	var run string
	eventually(t, "b's backups created and the refusals in a and c reported", func() error {
		p = getPolicy(t, e, ctx, p.Name)
		r := p.Status.LastRun
		if r == nil {
			return fmt.Errorf("no run yet")
		}
		run = r.Name
		if n := len(backupsOf(t, e, ctx, wb.ns, client.MatchingLabels{v1.LabelRun: run})); n != 2*inB {
			return fmt.Errorf("%d backups in namespace b, want %d", n, 2*inB)
		}
		if r.Outcome != v1.RunOutcomeInProgress || r.CreationEndTime != nil || failuresOf(r, ReasonCreateFailed) != 3 {
			return fmt.Errorf("last run %+v, want creating with 3 CreateFailed", r)
		}
		if c := meta(p, v1.ConditionReconciling); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "exceeded quota") {
			return fmt.Errorf("Reconciling = %+v, want the quota's message", c)
		}
		return nil
	})
	if n := len(backupsOf(t, e, ctx, wa.ns, client.MatchingLabels{v1.LabelRun: run})); n != 0 {
		t.Fatalf("%d backups in namespace a despite its quota", n)
	}
	if n := len(backupsOf(t, e, ctx, wc.ns, client.MatchingLabels{v1.LabelRun: run})); n != 0 {
		t.Fatalf("%d backups in namespace c, whose BackupRepository was refused", n)
	}
	waitPolicyEvent(t, e, ctx, p.Name, "BackupCreateFailed", "exceeded quota")
	inC := 0
	for _, f := range p.Status.LastRun.Failures {
		for _, ex := range f.Examples {
			if strings.HasPrefix(ex, wc.ns+"/") {
				inC++
				if f.Reason != ReasonCreateFailed || !strings.Contains(ex, "creating BackupRepository "+wc.ns+"/") || !strings.Contains(ex, "exceeded quota") {
					t.Errorf("namespace c's failure %s: %q, want CreateFailed with the refused BackupRepository", f.Reason, ex)
				}
			}
		}
	}
	if inC != 2 {
		t.Errorf("%d failures of namespace c's volumes among %+v, want 2", inC, p.Status.LastRun.Failures)
	}

	maxInFlight, posts, createdOK := watch.counts()
	if maxInFlight < watch.gather {
		t.Errorf("at most %d PodVolumeBackup creates were in flight at once, want at least %d: the run creates one after another", maxInFlight, watch.gather)
	}
	for _, b := range backupsOf(t, e, ctx, wb.ns, client.MatchingLabels{v1.LabelRun: run}) {
		key := b.Namespace + "/" + b.Name
		if posts[key] != 1 || createdOK[key] != 1 {
			t.Errorf("%s: %d creates sent, %d answered 201; want exactly one", key, posts[key], createdOK[key])
		}
	}
	for key, n := range posts {
		if strings.HasPrefix(key, wc.ns+"/") {
			t.Errorf("%s: %d creates sent in a namespace without its BackupRepository", key, n)
		}
		if strings.HasPrefix(key, wb.ns+"/") && createdOK[key] == 0 {
			t.Errorf("%s: %d creates sent for a backup that does not exist", key, n)
		}
	}
}
