package controlplane

import (
	"net/http"
	"strings"
	"sync"
)

// counter counts the requests a rest.Config's clients send, by verb and resource
// ("POST podvolumebackups", "PATCH volumebackuppolicies/status", "LIST pods",
// "WATCH namespaces"), and the PodVolumeBackups the API server created for them (201
// to a POST): a run has made all its backups when that count reaches its volumes.
type counter struct {
	mu      sync.Mutex
	n       map[string]int64
	created int64
}

func newCounter() *counter { return &counter{n: map[string]int64{}} }

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		kind := requestKind(req)
		resp, err := rt.RoundTrip(req)
		c.mu.Lock()
		c.n[kind]++
		if err == nil && resp.StatusCode == http.StatusCreated && kind == "POST podvolumebackups" {
			c.created++
		}
		c.mu.Unlock()
		return resp, err
	})
}

func (c *counter) snapshot() (map[string]int64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out, c.created
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// requestKind names a request by verb and resource: a GET of a collection is LIST,
// with watch=true WATCH; a subresource is resource/subresource.
func requestKind(req *http.Request) string {
	resource, named := resourceOf(req.URL.Path)
	verb := req.Method
	if verb == http.MethodGet && !named {
		verb = "LIST"
		if req.URL.Query().Get("watch") == "true" {
			verb = "WATCH"
		}
	}
	return verb + " " + resource
}

// resourceOf parses /api/v1/[namespaces/<ns>/]<resource>[/<name>[/<sub>]] and the
// same under /apis/<group>/<version>; named says a single object was addressed.
func resourceOf(path string) (resource string, named bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return path, true
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:] // a namespaced resource; "namespaces/<ns>" alone is a namespace
	}
	if len(parts) == 0 {
		return path, true // discovery
	}
	resource = parts[0]
	if len(parts) >= 3 {
		resource += "/" + parts[2]
	}
	return resource, len(parts) >= 2
}
