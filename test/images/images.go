package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image names pods use (with imagePullPolicy: Never). They carry no registry
// host: containerd files them under its default one, and the kubelet asks for them by
// these short names, which it normalises the same way.
const (
	Holdfast = "holdfast:dev"
	Busybox  = "busybox:holdfast-local"
	Pause    = "pause:holdfast-local"
)

// Options say where the inputs are and where the archives go.
type Options struct {
	// RepoRoot is the Holdfast checkout; its root package is the holdfast binary and
	// test/images/pause the pause program.
	RepoRoot string
	// Restic is the static restic binary put at /usr/local/bin/restic.
	Restic string
	// Busybox is the static busybox binary (Debian's busybox-static).
	Busybox string
	// OutDir receives <name>.tar archives.
	OutDir string
	// Log receives one line per step; nil discards.
	Log func(format string, args ...any)
}

// Archive is one built image.
type Archive struct {
	// Ref is the image reference pods use.
	Ref string
	// Path is a docker-format image archive (one layer).
	Path string
}

// file is one entry of an image's only layer.
type file struct {
	path string // absolute, inside the image
	mode int64
	data []byte // regular file content
	link string // symlink target, for symlinks
	dir  bool
}

// Build builds the holdfast, busybox and pause images as archives in OutDir.
func Build(ctx context.Context, o Options) ([]Archive, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.OutDir, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	holdfastBin := filepath.Join(work, "holdfast")
	pauseBin := filepath.Join(work, "pause")
	o.Log("images: building the holdfast binary (CGO_ENABLED=0) and the pause program")
	if err := goBuild(ctx, o.RepoRoot, holdfastBin, "."); err != nil {
		return nil, err
	}
	if err := goBuild(ctx, o.RepoRoot, pauseBin, "./test/images/pause"); err != nil {
		return nil, err
	}

	holdfast, err := readFiles(map[string]string{"/usr/local/bin/holdfast": holdfastBin, "/usr/local/bin/restic": o.Restic})
	if err != nil {
		return nil, err
	}
	holdfast = append(holdfast, baseFiles()...)
	busybox, err := busyboxFiles(ctx, o.Busybox)
	if err != nil {
		return nil, err
	}
	pause, err := readFiles(map[string]string{"/pause": pauseBin})
	if err != nil {
		return nil, err
	}

	specs := []struct {
		ref   string
		files []file
		cfg   v1.Config
	}{
		{Holdfast, holdfast, v1.Config{
			Entrypoint: []string{"/usr/local/bin/holdfast"},
			Env:        []string{"PATH=/usr/local/bin:/bin", "HOME=/tmp"},
			WorkingDir: "/",
		}},
		{Busybox, busybox, v1.Config{
			Cmd: []string{"sh"},
			Env: []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"},
		}},
		{Pause, pause, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}},
	}
	var out []Archive
	for _, s := range specs {
		path := filepath.Join(o.OutDir, strings.SplitN(s.ref, ":", 2)[0]+".tar")
		if err := writeImage(path, s.ref, s.files, s.cfg); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.ref, err)
		}
		o.Log("images: wrote %s as %s", s.ref, path)
		out = append(out, Archive{Ref: s.ref, Path: path})
	}
	return out, nil
}

func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func readFiles(m map[string]string) ([]file, error) {
	var fs []file
	for dst, src := range m {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		fs = append(fs, file{path: dst, mode: 0o755, data: b})
	}
	return fs, nil
}

// baseFiles are what most programs expect of a root file system: a writable /tmp and
// names for root and nobody.
func baseFiles() []file {
	return []file{
		{path: "/tmp", mode: 0o1777, dir: true},
		{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
}

// busyboxFiles is busybox with one symlink per applet, as Debian's busybox --install
// would lay it out.
func busyboxFiles(ctx context.Context, bin string) ([]file, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (install the busybox-static package: make cluster-packages)", err)
	}
	list, err := exec.CommandContext(ctx, bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	fs := append(baseFiles(), file{path: "/bin/busybox", mode: 0o755, data: b}, file{path: "/root", mode: 0o700, dir: true})
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			fs = append(fs, file{path: "/bin/" + applet, link: "busybox"})
		}
	}
	return fs, nil
}

// layerTar makes a tar of files with their parent directories, in a stable order and
// with a zero time, so that the same inputs give the same layer digest.
func layerTar(files []file) []byte {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
		if f.dir {
			delete(dirs, f.path)
		}
	}
	for d := range dirs {
		files = append(files, file{path: d, mode: 0o755, dir: true})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err) // writing to memory fails only on a programming error
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(f.data)
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

func writeImage(path, ref string, files []file, cfg v1.Config) error {
	data := layerTar(files)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH // the binaries are built for this host
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
