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
