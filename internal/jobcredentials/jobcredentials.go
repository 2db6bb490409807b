// Package jobcredentials is how an agent gets the repository key and store credentials
// of one job: it asks the manager, which hands them over only to the agent of the
// job's node, only while the job is due, and for a restore from another namespace only
// while that namespace grants it. Agents read no Secret themselves. Server is the
// manager's side, Client the agent's.
package jobcredentials

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Path is where the manager serves job credentials, on its webhook server (TLS).
const Path = "/agent/v1/job-credentials"

// Audience is the audience of the ServiceAccount token an agent presents: a token made
// for the manager alone, which the API server does not accept, and the other way round.
const Audience = "holdfast-manager"

// NodeNameExtra is where the API server puts the node of the pod a ServiceAccount
// token is bound to (Kubernetes 1.32 and later).
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// The kinds of work an agent asks credentials for.
const (
	KindBackup  = "PodVolumeBackup"
	KindRestore = "PodVolumeRestore"
)

// Request names the job.
type Request struct {
	Kind      string    `json:"kind"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
}

// Grant is what the job needs to open its repository, and nothing else.
type Grant struct {
	// Uploader is the repository format.
	Uploader v1.Uploader `json:"uploader"`
	// Namespace is the repository's namespace (a restore's source namespace).
	Namespace string `json:"namespace"`
	// Location is the spec of the storage location holding the repository.
	Location v1.BackupStorageLocationSpec `json:"location"`
	// Credentials are the data of the location's credentials Secret, if any.
	Credentials map[string][]byte `json:"credentials,omitempty"`
	// Password is the repository's own key.
	Password string `json:"password"`
}

// Outcome classifies a refusal.
type Outcome int

const (
	// Denied: the job must not run; its message says why (wrong node, finished work,
	// a restore not granted). The agent fails the job with it.
	Denied Outcome = iota + 1
	// Waiting: the repository is not ready yet; the job waits.
	Waiting
	// Unavailable: the manager could not be asked or could not answer; ask again.
	Unavailable
)

// Error is a refusal or a failure to ask, with one sentence for the job's status.
type Error struct {
	Outcome Outcome
	Message string
}

func (e *Error) Error() string { return e.Message }

func denied(format string, args ...any) *Error {
	return &Error{Outcome: Denied, Message: fmt.Sprintf(format, args...)}
}

func waiting(format string, args ...any) *Error {
	return &Error{Outcome: Waiting, Message: fmt.Sprintf(format, args...)}
}

// Granted reports whether the source namespace allows restores of its backups into
// the namespace into (the annotation AnnotationRestoreInto lists them).
func Granted(source *corev1.Namespace, into string) bool {
	for _, n := range strings.Split(source.Annotations[v1.AnnotationRestoreInto], ",") {
		if strings.TrimSpace(n) == into {
			return true
		}
	}
	return false
}
