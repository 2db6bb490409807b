package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	_ "time/tzdata" // the test's own idea of Paris time must not depend on the host

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The platforms `make image` builds, and the ELF machine each one's binaries must be.
var releasePlatforms = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func toolsBin() string {
	if dir := os.Getenv("HOLDFAST_TOOLS_BIN"); dir != "" {
		return dir
	}
	return filepath.Join(repoRoot(), "bin", "tools")
}

// release is the archive `make image` would write for this checkout, built once for
// the tests that inspect it.
var release struct {
	once   sync.Once
	dir    string
	path   string
	labels Labels
	digest v1.Hash
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if release.dir != "" {
		os.RemoveAll(release.dir)
	}
	os.Exit(code)
}

// buildRelease builds the multi-platform archive as cmd/holdfast-image does.
func buildRelease(t *testing.T) (path string, labels Labels) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds holdfast for two platforms; skipped by -short")
	}
	release.once.Do(func() {
		var platforms []Platform
		for _, arch := range slices.Sorted(maps.Keys(releasePlatforms)) {
			restic := ResticFor(toolsBin(), arch)
			if _, err := os.Stat(restic); err != nil {
				release.err = errors.New(err.Error() + ": run `make tools` (it cross-builds restic for the image) or `make image`")
				return
			}
			platforms = append(platforms, Platform{Arch: arch, Restic: restic})
		}
		ctx := context.Background()
		if release.labels, release.err = LabelsFromGit(ctx, repoRoot()); release.err != nil {
			return
		}
		if release.dir, release.err = os.MkdirTemp("", "holdfast-image-test-"); release.err != nil {
			return
		}
		idx, err := HoldfastImage(ctx, HoldfastOptions{RepoRoot: repoRoot(), Platforms: platforms, Labels: release.labels})
		if err != nil {
			release.err = err
			return
		}
		if release.digest, release.err = idx.Digest(); release.err != nil {
			return
		}
		release.path = filepath.Join(release.dir, "holdfast-image.tar")
		release.err = WriteArchive(release.path, "holdfast:"+release.labels.Tag(), idx)
	})
	if release.err != nil {
		t.Fatal(release.err)
	}
	return release.path, release.labels
}

// readArchive reads an OCI archive back as a registry tool would: the one image it
// names in index.json, an index.
func readArchive(t *testing.T, path string) (v1.Descriptor, v1.ImageIndex) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.Clean(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(target, b, 0o644)
			}
		default:
			t.Fatalf("%s: archive entry %s of type %c", path, h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI image layout: %v", path, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("%s: index.json lists %+v, want one image index", path, im.Manifests)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[0], idx
}

// layerFiles reads the only layer of img: each entry's header and, for regular files,
// the content.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	headers, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers, data
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			if data[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// platformImages maps each architecture of idx to its image.
func platformImages(t *testing.T, idx v1.ImageIndex) map[string]v1.Image {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" {
			t.Fatalf("index entry %s has platform %+v, want linux/<arch>", d.Digest, d.Platform)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		out[d.Platform.Architecture] = img
	}
	return out
}

// TestHoldfastImageIsCompleteAndMinimal inspects the archive `make image` writes: an
// index of linux/amd64 and linux/arm64, each with holdfast and restic built for it
// and nothing else that runs, the CA roots where Go and restic read them, a non-root
// default user, and labels that say the version and source from git.
func TestHoldfastImageIsCompleteAndMinimal(t *testing.T) {
	path, labels := buildRelease(t)
	top, idx := readArchive(t, path)

	if got, want := top.Annotations[refNameAnnotation], labels.Tag(); got != want {
		t.Errorf("index.json names the image %q, want the version tag %q", got, want)
	}
	revision, err := exec.Command("git", "-C", repoRoot(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	commitTime, err := exec.Command("git", "-C", repoRoot(), "log", "-1", "--format=%cI").Output()
	if err != nil {
		t.Fatal(err)
	}
	created, err := time.Parse(time.RFC3339, strings.TrimSpace(string(commitTime)))
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.version":  labels.Version,
		"org.opencontainers.image.revision": strings.TrimSpace(string(revision)),
		"org.opencontainers.image.created":  created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.source":   "https://github.com/holdfast-dev/holdfast",
	}
	if os.Getenv("SOURCE_DATE_EPOCH") != "" {
		delete(wantLabels, "org.opencontainers.image.created")
	}
	if labels.Version == "" {
		t.Error("no version from git describe")
	}
	checkLabels := func(what string, got map[string]string) {
		t.Helper()
		for k, v := range wantLabels {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
			}
		}
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	checkLabels("index annotations", im.Annotations)

	imgs := platformImages(t, idx)
	if len(imgs) != len(releasePlatforms) {
		t.Errorf("the index has platforms %v, want linux/amd64 and linux/arm64", slices.Sorted(maps.Keys(imgs)))
	}
	for arch, machine := range releasePlatforms {
		img, ok := imgs[arch]
		if !ok {
			t.Errorf("no linux/%s image in the index", arch)
			continue
		}
		t.Run(arch, func(t *testing.T) {
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != arch {
				t.Errorf("config says %s/%s", cf.OS, cf.Architecture)
			}
			checkLabels("config labels", cf.Config.Labels)
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			checkLabels("manifest annotations", m.Annotations)
			user, group, _ := strings.Cut(cf.Config.User, ":")
			if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
				t.Errorf("default user %q, want a numeric non-root user", cf.Config.User)
			}
			if gid, err := strconv.Atoi(group); err != nil || gid == 0 {
				t.Errorf("default group of %q, want a numeric non-root group", cf.Config.User)
			}
			if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != HoldfastBinary {
				t.Errorf("entrypoint %v, want %s", cf.Config.Entrypoint, HoldfastBinary)
			}

			headers, data := layerFiles(t, img)
			for name, h := range headers {
				if h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg {
					t.Errorf("%s: type %c; the image holds only directories and regular files", name, h.Typeflag)
				}
			}
			programs := map[string]bool{}
			for name, b := range data {
				if headers[name].Mode&0o111 != 0 || bytes.HasPrefix(b, []byte("\x7fELF")) || bytes.HasPrefix(b, []byte("#!")) {
					programs["/"+name] = true
				}
			}
			if want := map[string]bool{HoldfastBinary: true, ResticBinary: true}; !maps.Equal(programs, want) {
				t.Errorf("programs in the image: %v, want only %s and %s", slices.Sorted(maps.Keys(programs)), HoldfastBinary, ResticBinary)
			}
			for _, bin := range []string{HoldfastBinary, ResticBinary} {
				f, err := elf.NewFile(bytes.NewReader(data[strings.TrimPrefix(bin, "/")]))
				if err != nil {
					t.Errorf("%s: %v", bin, err)
					continue
				}
				if f.Machine != machine {
					t.Errorf("%s is for %v, want %v (linux/%s)", bin, f.Machine, machine, arch)
				}
				for _, p := range f.Progs {
					if p.Type == elf.PT_INTERP {
						t.Errorf("%s is dynamically linked; the image has no C library", bin)
					}
				}
			}

			bundle := data[strings.TrimPrefix(CABundlePath, "/")]
			n := 0
			for rest := bundle; ; {
				var block *pem.Block
				if block, rest = pem.Decode(rest); block == nil {
					break
				}
				if _, err := x509.ParseCertificate(block.Bytes); err != nil {
					t.Errorf("%s: certificate %d: %v", CABundlePath, n, err)
				}
				n++
			}
			if n < 100 {
				t.Errorf("%s holds %d certificates, want the ~140 public roots", CABundlePath, n)
			}

			passwd := string(data["etc/passwd"])
			if !strings.Contains(passwd, ":"+user+":"+group+":") {
				t.Errorf("/etc/passwd has no entry for the default user %s:\n%s", cf.Config.User, passwd)
			}
			if !strings.HasPrefix(passwd, "root:x:0:0:") {
				t.Errorf("/etc/passwd does not start with root (the agent runs as user 0 and takes its group from it):\n%s", passwd)
			}
			if h := headers["tmp/"]; h == nil || h.Mode != 0o1777 {
				t.Errorf("/tmp: %+v, want a directory with mode 1777", h)
			}
		})
	}
}

// TestHoldfastImageIsReproducible builds the image again from the same checkout and
// expects the same index: nothing in it comes from the clock.
func TestHoldfastImageIsReproducible(t *testing.T) {
	buildRelease(t)
	var platforms []Platform
	for _, arch := range []string{"amd64", "arm64"} {
		platforms = append(platforms, Platform{Arch: arch, Restic: ResticFor(toolsBin(), arch)})
	}
	idx, err := HoldfastImage(context.Background(), HoldfastOptions{RepoRoot: repoRoot(), Platforms: platforms, Labels: release.labels})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := idx.Digest(); err != nil || d != release.digest {
		t.Errorf("a second build gave index %v (%v), the first %v", d, err, release.digest)
	}
}

// TestHoldfastLoadsParisTimeWithoutZoneinfo runs the image's holdfast for this machine
// in a chroot of the image's own root file system (no /usr/share/zoneinfo, no Go
// installation) with TZ=Europe/Paris, and expects its log times in Paris time. Go
// resolves TZ with the loader time.LoadLocation uses (the directories, then the
// tzdata embedded in the binary), so this is what the policy webhook and schedules
// need for spec.schedule.timeZone; a binary without the embedded tzdata logs in UTC.
func TestHoldfastLoadsParisTimeWithoutZoneinfo(t *testing.T) {
	path, _ := buildRelease(t)
	if os.Geteuid() != 0 {
		t.Fatal("chroot needs root: run the test as root")
	}
	_, idx := readArchive(t, path)
	img, ok := platformImages(t, idx)[runtime.GOARCH]
	if !ok {
		t.Fatalf("no linux/%s image to run here", runtime.GOARCH)
	}
	root := t.TempDir()
	headers, data := layerFiles(t, img)
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		h, target := headers[name], filepath.Join(root, filepath.Clean(name))
		var err error
		if h.Typeflag == tar.TypeDir {
			if err = os.MkdirAll(target, 0o755); err == nil {
				err = os.Chmod(target, os.FileMode(h.Mode&0o777)|modeBits(h.Mode))
			}
		} else {
			err = os.WriteFile(target, data[name], os.FileMode(h.Mode&0o777))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"usr/share/zoneinfo", "usr/share/lib/zoneinfo", "usr/lib/locale/TZ", "etc/zoneinfo", "etc/localtime"} {
		if _, err := os.Stat(filepath.Join(root, dir)); err == nil {
			t.Fatalf("the image has %s; this test is about an image without zone files", dir)
		}
	}
	kubeconfig := `apiVersion: v1
kind: Config
clusters:
- name: none
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: none
  context: {cluster: none, user: none}
current-context: none
users:
- name: none
  user: {token: none}
`
	if err := os.WriteFile(filepath.Join(root, "kubeconfig"), []byte(kubeconfig), 0o644); err != nil {
		t.Fatal(err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := imageUser(t, cf.Config.User)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The manager logs its webhook registrations before it first talks to the API
	// server (which is not there); the first log line is enough. It runs in a network
	// namespace of its own, so that nothing it may bind before it is killed takes a
	// port from another test.
	cmd := exec.CommandContext(ctx, HoldfastBinary, "manager", "--kubeconfig=/kubeconfig",
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--webhook-cert-mode=external", "--webhook-cert-dir=/tmp", "--zap-time-encoding=rfc3339")
	cmd.Dir = "/"
	cmd.Env = []string{"TZ=Europe/Paris"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}, Cloneflags: syscall.CLONE_NEWNET}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var seen strings.Builder
	var logged time.Time
	sc := bufio.NewScanner(stderr)
	for logged.IsZero() && sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		var line struct {
			TS string `json:"ts"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.TS != "" {
			if logged, err = time.Parse(time.RFC3339, line.TS); err != nil {
				t.Fatalf("log time %q: %v", line.TS, err)
			}
		}
	}
	if logged.IsZero() {
		t.Fatalf("holdfast manager logged no timed line in the chroot:\n%s", seen.String())
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	_, got := logged.Zone()
	_, want := logged.In(paris).Zone()
	if got != want {
		t.Errorf("holdfast logged %s (UTC%+d s) with TZ=Europe/Paris, want Paris time (UTC%+d s): it has no time zone data of its own\n%s",
			logged.Format(time.RFC3339), got, want, seen.String())
	}
}

func imageUser(t *testing.T, user string) (uint32, uint32) {
	t.Helper()
	u, g, _ := strings.Cut(user, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("image user %q is not uid:gid", user)
	}
	return uint32(uid), uint32(gid)
}

func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// TestBuildLaysOutImages builds the local cluster's three archives and reads them back
// as `ctr images import` would: one platform, this machine's, and one layer each, the
// binaries where the pods expect them, under the name the kubelet asks for.
func TestBuildLaysOutImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the holdfast binary; skipped by -short")
	}
	opts := Options{RepoRoot: repoRoot(), Restic: filepath.Join(toolsBin(), "restic"), Busybox: "/bin/busybox", OutDir: t.TempDir(), Log: t.Logf}
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
		Holdfast: {"usr/local/bin/holdfast", "usr/local/bin/restic", "etc/ssl/certs/ca-certificates.crt", "tmp/", "etc/passwd"},
		Busybox:  {"bin/busybox", "bin/sh", "bin/httpd", "tmp/"},
		Pause:    {"pause"},
	}
	if len(archives) != len(want) {
		t.Fatalf("got %d archives, want %d", len(archives), len(want))
	}
	for _, a := range archives {
		top, idx := readArchive(t, a.Path)
		named, err := reference.ParseDockerRef(a.Ref)
		if err != nil {
			t.Fatal(err)
		}
		// containerd stores an OCI archive's image under this annotation as it is; the
		// kubelet asks for the normalised name of the pod's image.
		if got := top.Annotations[containerdNameAnnotation]; got != named.String() {
			t.Errorf("%s: containerd would name it %q, the kubelet asks for %q", a.Ref, got, named.String())
		}
		imgs := platformImages(t, idx)
		img, ok := imgs[runtime.GOARCH]
		if !ok || len(imgs) != 1 {
			t.Fatalf("%s: platforms %v, want linux/%s only", a.Ref, slices.Sorted(maps.Keys(imgs)), runtime.GOARCH)
		}
		headers, _ := layerFiles(t, img)
		for _, p := range want[a.Ref] {
			if headers[p] == nil {
				t.Errorf("%s: no %s in the layer", a.Ref, p)
			}
		}
	}
}
