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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
	// Restic is the static restic binary, for this machine, put at ResticBinary.
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
	// Path is an OCI archive (WriteArchive) of one image, for this machine's
	// architecture, with one layer.
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

// Build builds the holdfast, busybox and pause images for this machine's architecture
// as OCI archives in OutDir. The holdfast image is the one `make image` builds (see
// HoldfastImage), for this platform only.
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

	labels, err := LabelsFromGit(ctx, o.RepoRoot)
	if err != nil {
		o.Log("images: no version labels for the holdfast image: %v", err)
		labels = Labels{Version: "dev"}
	}
	holdfast, err := HoldfastImage(ctx, HoldfastOptions{
		RepoRoot:  o.RepoRoot,
		Platforms: []Platform{{Arch: runtime.GOARCH, Restic: o.Restic}},
		Labels:    labels,
		Log:       o.Log,
	})
	if err != nil {
		return nil, err
	}

	pauseBin := filepath.Join(work, "pause")
	o.Log("images: building the pause program")
	if err := goBuild(ctx, o.RepoRoot, pauseBin, "./test/images/pause", runtime.GOARCH); err != nil {
		return nil, err
	}
	busyboxFS, err := busyboxFiles(ctx, o.Busybox)
	if err != nil {
		return nil, err
	}
	pauseFS, err := readFiles(map[string]string{"/pause": pauseBin})
	if err != nil {
		return nil, err
	}
	busybox, err := hostIndex(busyboxFS, v1.Config{
		Cmd: []string{"sh"},
		Env: []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", Busybox, err)
	}
	pause, err := hostIndex(pauseFS, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", Pause, err)
	}

	var out []Archive
	for _, s := range []struct {
		ref string
		idx v1.ImageIndex
	}{{Holdfast, holdfast}, {Busybox, busybox}, {Pause, pause}} {
		path := filepath.Join(o.OutDir, strings.SplitN(s.ref, ":", 2)[0]+".tar")
		if err := WriteArchive(path, s.ref, s.idx); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.ref, err)
		}
		o.Log("images: wrote %s as %s", s.ref, path)
		out = append(out, Archive{Ref: s.ref, Path: path})
	}
	return out, nil
}

// hostIndex is an index of one image, for this machine's architecture, of files.
func hostIndex(files []file, cfg v1.Config) (v1.ImageIndex, error) {
	img, err := newImage(files, cfg, runtime.GOARCH, time.Time{}, nil)
	if err != nil {
		return nil, err
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}},
	}), nil
}

// goBuild builds pkg of the module in dir for linux/arch, static and without the
// build machine's paths.
func goBuild(ctx context.Context, dir, out, pkg, arch string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w\n%s", pkg, arch, err, b)
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
// names for root, the image's non-root user and nobody. No account has a shell.
func baseFiles() []file {
	return []file{
		{path: "/tmp", mode: 0o1777, dir: true},
		{path: "/etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%[1]d:%[1]d:nonroot:/tmp:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n", NonRootUser))},
		{path: "/etc/group", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\nnogroup:x:65534:\n", NonRootUser))},
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

// newImage is a one-layer OCI image of files for linux/arch. created and annotations
// may be empty.
func newImage(files []file, cfg v1.Config, arch string, created time.Time, annotations map[string]string) (v1.Image, error) {
	data := layerTar(files)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config = cfg
	if !created.IsZero() {
		cf.Created = v1.Time{Time: created}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	if len(annotations) > 0 {
		img = mutate.Annotations(img, annotations).(v1.Image)
	}
	return img, nil
}
