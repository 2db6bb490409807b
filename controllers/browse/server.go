package browse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Server answers relay pods on the manager's webhook server, under v1.BrowsePathPrefix.
// For every request it reads what is true now (not a cache) and checks, in order: the
// caller's token is a pod-bound ServiceAccount token for TokenAudience; that pod is the
// relay pod of a session (by name and UID) that has not expired; the snapshot is one of
// the session's restore points. Only then does it open the repository and read.
// Every read is an event on the session, naming the user who asked for it.
type Server struct {
	// Reader reads pods, sessions and repositories (uncached).
	Reader client.Reader
	// Reviewer creates TokenReviews.
	Reviewer client.Client
	Catalog  *storage.Catalog
	Recorder events.EventRecorder
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Event reasons of reads, on the session.
const (
	EventListed     = "Listed"
	EventDownloaded = "Downloaded"
	EventRefused    = "ReadRefused"
)

// Extra keys the API server puts in the user info of a pod-bound token.
const (
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
)

// refusal is an error the relay is told with a status code.
type refusal struct {
	status int
	msg    string
}

func (e *refusal) Error() string { return e.msg }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Register serves s on the manager's webhook server.
func (s *Server) Register(mgr ctrl.Manager) {
	mgr.GetWebhookServer().Register(v1.BrowsePathPrefix+"/", s)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := ctrl.Log.WithName("browse")
	op := strings.TrimPrefix(r.URL.Path, v1.BrowsePathPrefix)
	if r.Method != http.MethodGet {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	if op != v1.BrowseStat && op != v1.BrowseList && op != v1.BrowseGet {
		http.Error(w, "unknown browse endpoint "+r.URL.Path, http.StatusNotFound)
		return
	}
	path := r.URL.Query().Get("path")
	sess, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err == nil {
		err = repository.ValidateBrowsePath(path)
		if err != nil {
			err = refuse(http.StatusBadRequest, "path %q: %v", path, err)
		}
	}
	if err != nil {
		status := http.StatusServiceUnavailable
		var rf *refusal
		if errors.As(err, &rf) {
			status = rf.status
		}
		if sess != nil {
			s.Recorder.Eventf(sess, nil, corev1.EventTypeWarning, EventRefused, "Read", "refused to read %q for %s: %v", path, sess.Spec.RequestedBy, err)
		}
		log.Info("refused a browse request", "op", op, "path", path, "reason", err.Error())
		http.Error(w, err.Error(), status)
		return
	}
	if err := s.read(r.Context(), w, sess, op, path); err != nil {
		log.Info("browse request failed", "session", client.ObjectKeyFromObject(sess).String(), "op", op, "path", path, "reason", err.Error())
	}
}

// authenticate finds the live session of the relay pod whose token this is. It returns
// the session also with some refusals, so that they can be recorded on it.
func (s *Server) authenticate(ctx context.Context, header string) (*v1.BrowseSession, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return nil, refuse(http.StatusUnauthorized, "the request carries no ServiceAccount token")
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{TokenAudience}}}
	if err := s.Reviewer.Create(ctx, review); err != nil {
		return nil, fmt.Errorf("reviewing the relay's token: %w", err)
	}
	st := review.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, TokenAudience) {
		return nil, refuse(http.StatusUnauthorized, "the token was not accepted for audience %s (%s)", TokenAudience, st.Error)
	}
	ns, _, ok := serviceAccountOf(st.User.Username)
	names, uids := st.User.Extra[podNameExtra], st.User.Extra[podUIDExtra]
	if !ok || len(names) != 1 || len(uids) != 1 {
		return nil, refuse(http.StatusForbidden, "%s is not a pod's ServiceAccount token: only a relay pod's projected token is served", st.User.Username)
	}
	pod := &corev1.Pod{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: names[0]}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, refuse(http.StatusForbidden, "pod %s/%s of the token no longer exists", ns, names[0])
		}
		return nil, err
	}
	owner := metav1.GetControllerOf(pod)
	if string(pod.UID) != uids[0] || !IsRelayPod(pod) || owner == nil || owner.Kind != "BrowseSession" {
		return nil, refuse(http.StatusForbidden, "pod %s/%s is not a browse session's relay pod", ns, names[0])
	}
	sess := &v1.BrowseSession{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: owner.Name}, sess); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, refuse(http.StatusForbidden, "browse session %s/%s of relay pod %s is gone", ns, owner.Name, pod.Name)
		}
		return nil, err
	}
	switch {
	case sess.UID != owner.UID || sess.Status.RelayPod != pod.Name:
		return nil, refuse(http.StatusForbidden, "pod %s/%s is not the relay pod of browse session %s", ns, pod.Name, sess.Name)
	case !s.now().Before(ExpiresAt(sess)):
		return sess, refuse(http.StatusGone, "browse session %s/%s ended at %s", ns, sess.Name, ExpiresAt(sess).UTC().Format(time.RFC3339))
	case sess.Spec.SnapshotID == "" || !hasPoint(sess.Status.RestorePoints, sess.Spec.SnapshotID):
		return sess, refuse(http.StatusForbidden, "snapshot %s is not a restore point of browse session %s/%s", sess.Spec.SnapshotID, ns, sess.Name)
	}
	return sess, nil
}

// serviceAccountOf splits system:serviceaccount:<namespace>:<name>.
func serviceAccountOf(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

// read opens the session's repository and answers op.
func (s *Server) read(ctx context.Context, w http.ResponseWriter, sess *v1.BrowseSession, op, path string) error {
	var point v1.BrowseRestorePoint
	for _, p := range sess.Status.RestorePoints {
		if p.SnapshotID == sess.Spec.SnapshotID {
			point = p
		}
	}
	brepo := &v1.BackupRepository{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: sess.Namespace, Name: point.Repository}, brepo); err != nil {
		http.Error(w, fmt.Sprintf("reading BackupRepository %s/%s: %v", sess.Namespace, point.Repository, err), http.StatusServiceUnavailable)
		return err
	}
	rep, err := s.Catalog.Open(ctx, brepo)
	if err != nil {
		http.Error(w, fmt.Sprintf("opening repository %s/%s: %v", sess.Namespace, point.Repository, err), http.StatusServiceUnavailable)
		return err
	}
	defer rep.Close(ctx) //nolint:errcheck // returns the pool's loan
	id, shown := sess.Spec.SnapshotID, path
	if shown == "" {
		shown = "/"
	}
	entry, err := rep.Stat(ctx, id, path)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, repository.ErrPathNotInSnapshot) || errors.Is(err, repository.ErrSnapshotNotFound) {
			status = http.StatusNotFound
		}
		http.Error(w, err.Error(), status)
		return err
	}
	switch op {
	case v1.BrowseStat:
		return writeJSON(w, toEntry(entry))
	case v1.BrowseList:
		entries, err := rep.List(ctx, id, path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return err
		}
		out := make([]v1.BrowseEntry, 0, len(entries))
		for _, e := range entries {
			out = append(out, toEntry(e))
		}
		s.Recorder.Eventf(sess, nil, corev1.EventTypeNormal, EventListed, "Read", "%s listed %s of snapshot %s of %s", sess.Spec.RequestedBy, shown, id, sess.Status.SourcePath)
		return writeJSON(w, out)
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if entry.Size >= 0 {
		w.Header().Set(v1.BrowseTotalBytesHeader, strconv.FormatInt(entry.Size, 10))
	}
	res, err := rep.Tar(ctx, id, path, w)
	if err != nil {
		// The status line is sent: the relay and the plugin see a tar stream cut short.
		s.Recorder.Eventf(sess, nil, corev1.EventTypeWarning, EventDownloaded, "Read", "download of %s of snapshot %s of %s by %s stopped after %s: %v",
			shown, id, sess.Status.SourcePath, sess.Spec.RequestedBy, storage.FormatBytes(res.Bytes), err)
		return err
	}
	s.Recorder.Eventf(sess, nil, corev1.EventTypeNormal, EventDownloaded, "Read", "%s downloaded %s of snapshot %s of %s: %d files, %s",
		sess.Spec.RequestedBy, shown, id, sess.Status.SourcePath, res.Files, storage.FormatBytes(res.Bytes))
	return nil
}

func toEntry(e repository.Entry) v1.BrowseEntry {
	mode := e.Mode
	switch e.Type {
	case repository.EntryDir:
		mode |= os.ModeDir
	case repository.EntrySymlink:
		mode |= os.ModeSymlink
	case repository.EntryOther:
		mode |= os.ModeIrregular
	}
	return v1.BrowseEntry{Name: e.Name, Type: string(e.Type), Size: e.Size, Mode: mode.String(),
		ModTime: metav1.NewTime(e.ModTime.UTC()), Target: e.Target}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}
