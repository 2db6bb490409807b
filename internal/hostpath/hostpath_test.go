package hostpath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseRoots(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "", want: ""},
		{in: "/var/lib/rancher/k3s/storage, /opt/local-path-provisioner,", want: "/var/lib/rancher/k3s/storage,/opt/local-path-provisioner"},
		{in: "relative/dir", wantErr: true},
		{in: "/", wantErr: true},
		{in: "/opt/x/", wantErr: true},
		{in: "/opt/../etc", wantErr: true},
	} {
		got, err := ParseRoots(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && got.String() != tc.want) {
			t.Errorf("ParseRoots(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestUnder(t *testing.T) {
	roots := Roots{"/var/lib/rancher/k3s/storage", "/opt/lpp"}
	for _, tc := range []struct {
		path, root, rel string
	}{
		{path: "/var/lib/rancher/k3s/storage/pvc-1_ns_data", root: "/var/lib/rancher/k3s/storage", rel: "pvc-1_ns_data"},
		{path: "/opt/lpp/a/b/", root: "/opt/lpp", rel: "a/b"},
		{path: "/opt/lpp//a", root: "/opt/lpp", rel: "a"},
		{path: "/opt/lpp"},                     // the root itself: strictly under only
		{path: "/opt/lppx/a"},                  // a sibling sharing a prefix
		{path: "/opt/lpp/../etc"},              // ".." refused
		{path: "/opt/lpp/a/../b"},              // even back inside
		{path: "/srv/data"},                    // outside
		{path: "opt/lpp/a"},                    // not absolute
		{path: "/var/lib/rancher/k3s/storage"}, // the root itself
	} {
		d, err := roots.Under(tc.path)
		if tc.root == "" {
			if !errors.Is(err, ErrOutside) {
				t.Errorf("Under(%q) = %+v, %v; want ErrOutside", tc.path, d, err)
			}
			continue
		}
		if err != nil || d.Root != tc.root || d.Rel != tc.rel {
			t.Errorf("Under(%q) = %+v, %v; want %s + %s", tc.path, d, err, tc.root, tc.rel)
		}
	}
	if _, err := Roots(nil).Under("/opt/lpp/a"); !errors.Is(err, ErrOutside) {
		t.Errorf("no roots: %v, want ErrOutside", err)
	}
}

// TestOpenFollowsNoLink: a directory under a root opens; one whose way down passes a
// symbolic link, to outside the root or inside it, does not.
func TestOpenFollowsNoLink(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	for _, d := range []string{"pvc-1/data", "pvc-2"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"out": outside, "pvc-1/in": filepath.Join(root, "pvc-2"), "rel": "pvc-2"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range []string{"pvc-1", "pvc-1/data", "pvc-2"} {
		if err := Check(Dir{Root: root, Rel: rel}); err != nil {
			t.Errorf("Check(%s): %v", rel, err)
		}
	}
	for _, rel := range []string{"out", "pvc-1/in", "rel", "out/x"} {
		if err := Check(Dir{Root: root, Rel: rel}); !errors.Is(err, ErrLink) {
			t.Errorf("Check(%s) = %v, want ErrLink", rel, err)
		}
	}
	if err := Check(Dir{Root: root, Rel: "../x"}); !errors.Is(err, ErrOutside) {
		t.Errorf("Check(../x) = %v, want ErrOutside", err)
	}
	if err := Check(Dir{Root: root, Rel: "missing"}); err == nil || errors.Is(err, ErrLink) {
		t.Errorf("Check(missing) = %v, want a plain error", err)
	}
}

// The flag adds what each occurrence names: a component and an overlay add theirs.
func TestSetAdds(t *testing.T) {
	var r Roots
	for _, v := range []string{"/var/local-path-provisioner,/opt/local-path-provisioner", "/var/lib/holdfast/local-path"} {
		if err := r.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.String(); got != "/var/local-path-provisioner,/opt/local-path-provisioner,/var/lib/holdfast/local-path" {
		t.Errorf("roots %s", got)
	}
}

// With the node's filesystem mounted at host, a root is found as the node sees it:
// an absolute link on the way (the admin's) leads inside host, not into the agent's
// own filesystem.
func TestInHost(t *testing.T) {
	host := t.TempDir()
	if err := os.MkdirAll(filepath.Join(host, "data", "rancher", "k3s", "storage"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(host, "var", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/data/rancher", filepath.Join(host, "var", "lib", "rancher")); err != nil {
		t.Fatal(err)
	}
	got, err := InHost(host, "/var/lib/rancher/k3s/storage")
	if want := filepath.Join(host, "data", "rancher", "k3s", "storage"); err != nil || got != want {
		t.Errorf("InHost = %q, %v; want %s", got, err, want)
	}
	if _, err := InHost(host, "/opt/local-path-provisioner"); err == nil {
		t.Error("InHost of a root the node does not have: no error")
	}
	if got, err := InHost("", "/opt/x"); err != nil || got != "/opt/x" {
		t.Errorf("InHost without a host mount = %q, %v; want the root itself", got, err)
	}
}
