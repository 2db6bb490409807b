package images

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuildLaysOutImages builds the three archives and reads them back as a container
// runtime would: one layer each, the binaries where the pods expect them.
func TestBuildLaysOutImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the holdfast binary; skipped by -short")
	}
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	tools := os.Getenv("HOLDFAST_TOOLS_BIN")
	if tools == "" {
		tools = filepath.Join(repo, "bin", "tools")
	}
	opts := Options{RepoRoot: repo, Restic: filepath.Join(tools, "restic"), Busybox: "/bin/busybox", OutDir: t.TempDir(), Log: t.Logf}
	for _, p := range []string{opts.Restic, opts.Busybox} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v: run `make tools cluster-packages`", err)
		}
	}
	archives, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		Holdfast: {"usr/local/bin/holdfast", "usr/local/bin/restic", "tmp/", "etc/passwd"},
		Busybox:  {"bin/busybox", "bin/sh", "bin/httpd", "tmp/"},
		Pause:    {"pause"},
	}
	if len(archives) != len(want) {
		t.Fatalf("got %d archives, want %d", len(archives), len(want))
	}
	for _, a := range archives {
		tag, err := name.NewTag(a.Ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(a.Path, &tag)
		if err != nil {
			t.Fatalf("%s: %v", a.Ref, err)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers, %v", a.Ref, len(layers), err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
			t.Fatalf("%s: config %+v, %v", a.Ref, cf, err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			seen[h.Name] = true
		}
		rc.Close()
		for _, p := range want[a.Ref] {
			if !seen[p] {
				t.Errorf("%s: no %s in the layer", a.Ref, p)
			}
		}
	}
}
