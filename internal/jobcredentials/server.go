package jobcredentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Server is the manager's side. It answers one agent request at a time, reading what
// is true now (not a cache) and checking, in order: the caller is the agent
// ServiceAccount with a token bound to a pod on a node; the job exists with the UID
// asked for, runs on that node and is not finished; a restore belongs to its
// VolumeRestore and, from another namespace, is still granted; the repository is
// Ready. Only then does it read the two Secrets and answer.
type Server struct {
	// Reader reads the job, its repository and the Secrets (uncached).
	Reader client.Reader
	// Reviewer creates TokenReviews.
	Reviewer client.Client
	// Namespace is the operator namespace: the agents' ServiceAccount and the Secrets.
	Namespace string
	// AgentServiceAccount is the agents' ServiceAccount name in Namespace.
	AgentServiceAccount string
}

// maxRequestBytes bounds a request body; a real one is a few hundred bytes.
const maxRequestBytes = 4 << 10

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := ctrl.Log.WithName("job-credentials")
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(&req); err != nil {
		http.Error(w, "the request is not a job credentials request: "+err.Error(), http.StatusBadRequest)
		return
	}
	node, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err == nil {
		var grant Grant
		if grant, err = s.grant(r.Context(), node, req); err == nil {
			log.Info("handed a job its repository key", "node", node, "kind", req.Kind, "namespace", req.Namespace, "name", req.Name)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(grant)
			return
		}
	}
	status := http.StatusServiceUnavailable
	var e *Error
	if errors.As(err, &e) {
		switch e.Outcome {
		case Denied:
			status = http.StatusForbidden
		case Waiting:
			status = http.StatusConflict
		}
	}
	log.Info("refused job credentials", "node", node, "kind", req.Kind, "namespace", req.Namespace, "name", req.Name, "reason", err.Error())
	http.Error(w, err.Error(), status)
}

// authenticate returns the node of the agent whose token this is.
func (s *Server) authenticate(ctx context.Context, header string) (string, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return "", denied("the request carries no ServiceAccount token")
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}}}
	if err := s.Reviewer.Create(ctx, review); err != nil {
		return "", fmt.Errorf("reviewing the agent's token: %w", err)
	}
	st := review.Status
	want := "system:serviceaccount:" + s.Namespace + ":" + s.AgentServiceAccount
	switch {
	case !st.Authenticated:
		return "", denied("the token was not accepted (%s)", st.Error)
	case !slices.Contains(st.Audiences, Audience):
		return "", denied("the token is not meant for the manager (audience %s)", Audience)
	case st.User.Username != want:
		return "", denied("%s is not the agent's ServiceAccount %s", st.User.Username, want)
	}
	nodes := st.User.Extra[NodeNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		return "", denied("the agent's token is not bound to a pod on a node: mount a projected ServiceAccount token with audience %s", Audience)
	}
	return nodes[0], nil
}

// grant checks the job and reads what it needs.
func (s *Server) grant(ctx context.Context, node string, req Request) (Grant, error) {
	key := types.NamespacedName{Namespace: req.Namespace, Name: req.Name}
	var (
		repoNamespace, repoName string
		uploader                v1.Uploader
	)
	switch req.Kind {
	case KindBackup:
		pvb := &v1.PodVolumeBackup{}
		if err := s.job(ctx, key, req.UID, pvb); err != nil {
			return Grant{}, err
		}
		if err := due(req, pvb.Spec.Node, node, pvb.Status.Phase, pvb.Spec.Cancel); err != nil {
			return Grant{}, err
		}
		repoNamespace, repoName, uploader = pvb.Namespace, pvb.Spec.Repository, pvb.Spec.Uploader
	case KindRestore:
		pvr := &v1.PodVolumeRestore{}
		if err := s.job(ctx, key, req.UID, pvr); err != nil {
			return Grant{}, err
		}
		if err := due(req, pvr.Spec.Node, node, pvr.Status.Phase, pvr.Spec.Cancel); err != nil {
			return Grant{}, err
		}
		if err := s.restoreGranted(ctx, pvr); err != nil {
			return Grant{}, err
		}
		repoNamespace, repoName, uploader = pvr.Spec.SourceNamespace, pvr.Spec.Repository, pvr.Spec.Uploader
	default:
		return Grant{}, denied("unknown kind of work %q", req.Kind)
	}
	return s.repositoryGrant(ctx, repoNamespace, repoName, uploader)
}

func (s *Server) job(ctx context.Context, key types.NamespacedName, uid types.UID, obj client.Object) error {
	kind := strings.TrimPrefix(fmt.Sprintf("%T", obj), "*v1alpha1.")
	if err := s.Reader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return denied("%s %s does not exist", kind, key)
		}
		return fmt.Errorf("reading %s %s: %w", kind, key, err)
	}
	if obj.GetUID() != uid {
		return denied("%s %s was replaced (uid %s, asked for %s)", kind, key, obj.GetUID(), uid)
	}
	return nil
}

// due checks that the job is this node's and still to be done.
func due(req Request, jobNode, agentNode string, phase v1.RunPhase, cancel bool) error {
	switch {
	case jobNode != agentNode:
		return denied("%s %s/%s belongs to node %s; the agent of node %s may not move its data", req.Kind, req.Namespace, req.Name, jobNode, agentNode)
	case phase == v1.RunCompleted || phase == v1.RunFailed || phase == v1.RunCanceled:
		return denied("%s %s/%s is %s; finished work gets no key", req.Kind, req.Namespace, req.Name, phase)
	case cancel:
		return denied("%s %s/%s was canceled", req.Kind, req.Namespace, req.Name)
	}
	return nil
}

// restoreGranted checks that the restore is part of the VolumeRestore it names (by UID,
// as its controller owner), restores from that VolumeRestore's source, and, from
// another namespace, that the source namespace still grants it.
func (s *Server) restoreGranted(ctx context.Context, pvr *v1.PodVolumeRestore) error {
	owner := metav1.GetControllerOf(pvr)
	if owner == nil || owner.Kind != "VolumeRestore" || owner.Name != pvr.Spec.VolumeRestore {
		return denied("PodVolumeRestore %s/%s was not created by the restore controller for VolumeRestore %s; it is not restored", pvr.Namespace, pvr.Name, pvr.Spec.VolumeRestore)
	}
	vr := &v1.VolumeRestore{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: pvr.Namespace, Name: owner.Name}, vr); err != nil {
		if apierrors.IsNotFound(err) {
			return denied("VolumeRestore %s/%s of this restore no longer exists", pvr.Namespace, owner.Name)
		}
		return fmt.Errorf("reading VolumeRestore %s/%s: %w", pvr.Namespace, owner.Name, err)
	}
	source := vr.Spec.SourceNamespace
	if source == "" {
		source = vr.Namespace
	}
	switch {
	case vr.UID != owner.UID:
		return denied("VolumeRestore %s/%s was replaced since this restore was planned", pvr.Namespace, owner.Name)
	case source != pvr.Spec.SourceNamespace:
		return denied("PodVolumeRestore %s/%s reads namespace %s, but its VolumeRestore restores from %s", pvr.Namespace, pvr.Name, pvr.Spec.SourceNamespace, source)
	case source == pvr.Namespace:
		return nil
	}
	ns := &corev1.Namespace{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Name: source}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return denied("namespace %s, the source of this restore, no longer exists", source)
		}
		return fmt.Errorf("reading namespace %s: %w", source, err)
	}
	if !Granted(ns, pvr.Namespace) {
		return denied("namespace %s does not allow restores into %s (annotation %s); nothing was restored", source, pvr.Namespace, v1.AnnotationRestoreInto)
	}
	return nil
}

// repositoryGrant reads the repository, its location, the location's credentials and
// the repository's key.
func (s *Server) repositoryGrant(ctx context.Context, namespace, name string, uploader v1.Uploader) (Grant, error) {
	repo := &v1.BackupRepository{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, repo); err != nil {
		if apierrors.IsNotFound(err) {
			return Grant{}, waiting("waiting for BackupRepository %s/%s to be created", namespace, name)
		}
		return Grant{}, fmt.Errorf("reading BackupRepository %s/%s: %w", namespace, name, err)
	}
	if repo.Spec.Uploader != uploader {
		return Grant{}, denied("BackupRepository %s/%s is a %s repository, not %s", namespace, name, repo.Spec.Uploader, uploader)
	}
	if !conditions.IsReady(repo.Status.Conditions) {
		msg := conditions.ReadyMessage(repo.Status.Conditions)
		if conditions.IsStalled(repo.Status.Conditions) {
			return Grant{}, denied("BackupRepository %s/%s cannot be used: %s", namespace, name, msg)
		}
		if msg == "" {
			msg = "not initialised yet"
		}
		return Grant{}, waiting("waiting for BackupRepository %s/%s to be ready: %s", namespace, name, msg)
	}
	loc := &v1.BackupStorageLocation{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Name: repo.Spec.StorageLocation}, loc); err != nil {
		return Grant{}, fmt.Errorf("reading BackupStorageLocation %s: %w", repo.Spec.StorageLocation, err)
	}
	g := Grant{Uploader: repo.Spec.Uploader, Namespace: namespace, Location: loc.Spec}
	if s3 := loc.Spec.S3; s3 != nil {
		creds := &corev1.Secret{}
		if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s3.CredentialsSecretRef.Name}, creds); err != nil {
			return Grant{}, fmt.Errorf("reading the credentials Secret %s/%s of BackupStorageLocation %s: %w", s.Namespace, s3.CredentialsSecretRef.Name, loc.Name, err)
		}
		g.Credentials = creds.Data
	}
	key := &corev1.Secret{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: repo.Status.KeySecretName}, key); err != nil {
		return Grant{}, fmt.Errorf("reading the key Secret %s/%s of BackupRepository %s/%s: %w", s.Namespace, repo.Status.KeySecretName, namespace, name, err)
	}
	if len(key.Data[repository.KeySecretKey]) == 0 {
		return Grant{}, fmt.Errorf("the key Secret %s/%s has no %q", s.Namespace, repo.Status.KeySecretName, repository.KeySecretKey)
	}
	g.Password = string(key.Data[repository.KeySecretKey])
	return g, nil
}
