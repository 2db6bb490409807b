package browse

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Relay is what a relay pod runs: it passes GET requests for the browse endpoints on
// to the manager, adding the pod's token (read for every request: the kubelet renews
// it), and refuses everything else.
type Relay struct {
	// ManagerURL is https://host:port of the manager.
	ManagerURL string
	// ServerName is the name in the manager's certificate; CA signs it (PEM).
	ServerName string
	CA         []byte
	// TokenFile is the pod's projected token for TokenAudience.
	TokenFile string
}

// Handler returns the relay's HTTP handler.
func (r Relay) Handler() (http.Handler, error) {
	target, err := url.Parse(strings.TrimSuffix(r.ManagerURL, "/"))
	if err != nil || target.Scheme != "https" || target.Host == "" {
		return nil, fmt.Errorf("%s %q is not an https URL", FlagManagerURL, r.ManagerURL)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(r.CA) {
		return nil, fmt.Errorf("$%s holds no PEM certificate of the manager's certificate authority", EnvManagerCA)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.URL.Path = v1.BrowsePathPrefix + pr.In.URL.Path
			pr.Out.URL.RawPath = ""
			pr.Out.Host = ""
		},
		Transport: &http.Transport{
			TLSClientConfig:       &tls.Config{RootCAs: pool, ServerName: r.ServerName, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 5 * time.Minute,
			IdleConnTimeout:       time.Minute,
		},
		FlushInterval: 100 * time.Millisecond,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		switch req.URL.Path {
		case v1.BrowseStat, v1.BrowseList, v1.BrowseGet:
		default:
			http.Error(w, "unknown browse endpoint "+req.URL.Path, http.StatusNotFound)
			return
		}
		token, err := os.ReadFile(r.TokenFile)
		if err != nil {
			http.Error(w, "the relay cannot read its token: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		req.Header.Del("Cookie")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		proxy.ServeHTTP(w, req)
	}), nil
}
