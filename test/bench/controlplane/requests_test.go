package controlplane

import (
	"net/http"
	"net/url"
	"testing"
)

func TestRequestKind(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"POST", "/apis/backup.holdfast.dev/v1alpha1/namespaces/team-0001/podvolumebackups", "POST podvolumebackups"},
		{"PATCH", "/apis/backup.holdfast.dev/v1alpha1/volumebackuppolicies/bench-01/status", "PATCH volumebackuppolicies/status"},
		{"GET", "/apis/backup.holdfast.dev/v1alpha1/volumebackuppolicies/bench-01", "GET volumebackuppolicies"},
		{"GET", "/api/v1/pods?limit=500&resourceVersion=0", "LIST pods"},
		{"GET", "/api/v1/namespaces?allowWatchBookmarks=true&watch=true", "WATCH namespaces"},
		{"GET", "/api/v1/namespaces/team-0001", "GET namespaces"},
		{"GET", "/api/v1/namespaces/team-0001/pods", "LIST pods"},
		{"POST", "/api/v1/namespaces/team-0001/events", "POST events"},
		{"GET", "/apis", "GET /apis"},
		{"GET", "/apis/backup.holdfast.dev/v1alpha1", "GET /apis/backup.holdfast.dev/v1alpha1"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := requestKind(&http.Request{Method: tc.method, URL: u}); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

// TestCounterCountsCreatedBackups: the bench ends a run on the manager's count of
// PodVolumeBackups the API server created (201), not on creates it refused (409, an
// object that exists) nor on other objects created.
func TestCounterCountsCreatedBackups(t *testing.T) {
	c := newCounter()
	var status int
	rt := c.wrap(roundTripper(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: status}, nil
	}))
	send := func(method, path string, code int) {
		t.Helper()
		status = code
		u, _ := url.Parse(path)
		if _, err := rt.RoundTrip(&http.Request{Method: method, URL: u}); err != nil {
			t.Fatal(err)
		}
	}
	pvbs := "/apis/backup.holdfast.dev/v1alpha1/namespaces/team-0001/podvolumebackups"
	send("POST", pvbs, http.StatusCreated)
	send("POST", pvbs, http.StatusCreated)
	send("POST", pvbs, http.StatusConflict)
	send("POST", "/apis/backup.holdfast.dev/v1alpha1/namespaces/team-0001/backuprepositories", http.StatusCreated)
	send("GET", pvbs, http.StatusOK)
	n, created := c.snapshot()
	if created != 2 {
		t.Errorf("created %d, want 2", created)
	}
	if n["POST podvolumebackups"] != 3 || n["POST backuprepositories"] != 1 || n["LIST podvolumebackups"] != 1 {
		t.Errorf("requests %v", n)
	}
}
