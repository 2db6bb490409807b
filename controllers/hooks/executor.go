package hooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// Executor runs a command in a container of a running pod and reports how it ended.
// The HookReconciler takes it as an interface: the kubelet, which runs exec, is
// absent in envtest, whose tests give it a recording executor instead.
type Executor interface {
	// Exec runs command in the container and returns its result; err is set only
	// when the command could not be run or its outcome is unknown (the stream broke,
	// ctx ended: a timeout).
	Exec(ctx context.Context, namespace, pod, container string, command []string) (ExecResult, error)
}

// ExecResult is how a command that ran ended.
type ExecResult struct {
	// ExitCode is the command's exit code.
	ExitCode int
	// Stdout and Stderr are the last tailBytes of each.
	Stdout, Stderr string
}

// tailBytes is how much of each output stream is kept for the hook's message.
const tailBytes = 512

// RemoteExecutor runs commands through the API server's pods/exec, as kubectl exec
// does: over WebSocket, falling back to SPDY on servers that cannot upgrade to it.
type RemoteExecutor struct {
	Config *rest.Config
	// Client is a REST client for the core API group (corev1).
	Client rest.Interface
}

// NewRemoteExecutor builds a RemoteExecutor from the manager's REST config.
func NewRemoteExecutor(cfg *rest.Config) (*RemoteExecutor, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("building the exec client: %w", err)
	}
	return &RemoteExecutor{Config: c, Client: rc}, nil
}

// Exec runs command in the container. A non-zero exit is a result, not an error.
func (e *RemoteExecutor) Exec(ctx context.Context, namespace, pod, container string, command []string) (ExecResult, error) {
	req := e.Client.Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(e.Config, http.MethodPost, req.URL())
	if err != nil {
		return ExecResult{}, err
	}
	// WebSocket must be a GET (RFC 6455).
	ws, err := remotecommand.NewWebSocketExecutor(e.Config, http.MethodGet, req.URL().String())
	if err != nil {
		return ExecResult{}, err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return ExecResult{}, err
	}
	var stdout, stderr tail
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	res := ExecResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit exec.ExitError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &exit) && exit.Exited():
		res.ExitCode = exit.ExitStatus()
		return res, nil
	case ctx.Err() != nil:
		return res, ctx.Err()
	}
	return res, err
}

// tail is an io.Writer that keeps the last tailBytes written.
type tail struct{ buf []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.ToValidUTF8(string(t.buf), "") }
