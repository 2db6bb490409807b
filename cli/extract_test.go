package cli

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestExtractStaysInItsDirectory: a download is a tenant's data, and a hostile tenant
// can put anything in the tar their backup becomes. get writes below --to and nowhere
// else: not through a "..", an absolute name or a link the download itself made, and
// never over a file.
func TestExtractStaysInItsDirectory(t *testing.T) {
	type entry struct {
		name, link string
		typ        byte
		body       string
	}
	for _, c := range []struct {
		what    string
		entries []entry
		says    string
	}{
		{"a name with ..", []entry{{name: "../escaped", typ: tar.TypeReg, body: "x"}}, "outside the directory"},
		{"an absolute name", []entry{{name: "/tmp/escaped", typ: tar.TypeReg, body: "x"}}, "outside the directory"},
		{"a file through a link out", []entry{{name: "d", typ: tar.TypeDir}, {name: "d/out", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "d/out/escaped", typ: tar.TypeReg, body: "x"}}, ""},
		{"a file over a link", []entry{{name: "f", typ: tar.TypeSymlink, link: "OUTSIDE/escaped"}, {name: "f", typ: tar.TypeReg, body: "x"}}, ""},
		{"a file twice", []entry{{name: "f", typ: tar.TypeReg, body: "x"}, {name: "f", typ: tar.TypeReg, body: "y"}}, ""},
	} {
		t.Run(c.what, func(t *testing.T) {
			outside := t.TempDir()
			dest := t.TempDir()
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range c.entries {
				h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)),
					Linkname: strings.ReplaceAll(e.link, "OUTSIDE", outside)}
				if e.typ != tar.TypeReg {
					h.Size = 0
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if e.typ == tar.TypeReg {
					_, _ = tw.Write([]byte(e.body))
				}
			}
			_ = tw.Close()
			root, err := os.OpenRoot(dest)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			var done atomic.Int64
			_, err = extract(tar.NewReader(&buf), root, &done)
			if err == nil || (c.says != "" && !strings.Contains(err.Error(), c.says)) {
				t.Errorf("extract: %v, want an error saying %q", err, c.says)
			}
			for _, p := range []string{filepath.Join(outside, "escaped"), filepath.Join(filepath.Dir(dest), "escaped"), "/tmp/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside --to", p)
				}
			}
			if got, err := os.ReadFile(filepath.Join(dest, "f")); err == nil && string(got) == "y" {
				t.Errorf("a second entry wrote over the first")
			}
		})
	}
}
