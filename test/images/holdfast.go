package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The Holdfast image holds the holdfast binary, restic, the CA roots and the names of
// its users, and nothing else: no shell, no package manager, no other program.
const (
	// HoldfastBinary and ResticBinary are the image's only programs.
	HoldfastBinary = "/usr/local/bin/holdfast"
	ResticBinary   = "/usr/local/bin/restic"
	// CABundlePath is the first file Go's crypto/x509 reads CA roots from on Linux, so
	// holdfast and restic (a Go program too) both trust them with no setting.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// NonRootUser is the image's default user and group. The manager runs as it; the
	// agent's DaemonSet asks for root, which reading every volume takes.
	NonRootUser = 65532
	// DefaultCACertificates is where Debian's ca-certificates package keeps the Mozilla
	// roots, one PEM file each. The image's bundle is made of these files only, not
	// of /etc/ssl/certs/ca-certificates.crt, which may hold the roots an
	// administrator added to the build machine.
	DefaultCACertificates = "/usr/share/ca-certificates/mozilla"
)

// Platform is one architecture the image is built for (the OS is always linux).
type Platform struct {
	// Arch is a GOARCH: amd64, arm64.
	Arch string
	// Restic is a static restic binary for Arch.
	Restic string
}

// ResticFor is where `test/tools/build.sh --platform linux/<arch> restic` puts the
// restic binary for arch under a tools directory (bin/tools).
func ResticFor(toolsBin, arch string) string {
	return filepath.Join(toolsBin, "linux-"+arch, "restic")
}

// Labels say which Holdfast an image holds. They become the image's OCI labels and
// the annotations of its index and manifests.
type Labels struct {
	// Version is `git describe --tags --always --dirty`: a tag, or a commit.
	Version string
	// Revision is the full commit ID.
	Revision string
	// Created is the commit's time (or $SOURCE_DATE_EPOCH), never the build's, so
	// the same commit gives the same image.
	Created time.Time
	// Source is the URL of the source repository.
	Source string
}

// OCI annotation keys (also used as labels).
const (
	labelTitle       = "org.opencontainers.image.title"
	labelDescription = "org.opencontainers.image.description"
	labelVersion     = "org.opencontainers.image.version"
	labelRevision    = "org.opencontainers.image.revision"
	labelCreated     = "org.opencontainers.image.created"
	labelSource      = "org.opencontainers.image.source"
)

func (l Labels) annotations() map[string]string {
	m := map[string]string{
		labelTitle:       "holdfast",
		labelDescription: "Holdfast: backups of Kubernetes pod volumes driven by policies (holdfast and restic)",
		labelVersion:     l.Version,
		labelRevision:    l.Revision,
		labelSource:      l.Source,
	}
	if !l.Created.IsZero() {
		m[labelCreated] = l.Created.UTC().Format(time.RFC3339)
	}
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	return m
}

// Tag is the image tag for the version: the version with what a tag cannot hold
// replaced by '-'.
func (l Labels) Tag() string {
	t := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(l.Version, "-")
	t = strings.TrimLeft(t, ".-")
	if len(t) > 128 {
		t = t[:128]
	}
	if t == "" {
		return "dev"
	}
	return t
}

// LabelsFromGit reads the labels of the checkout at repoRoot from git, and the source
// URL from the module path in its go.mod.
func LabelsFromGit(ctx context.Context, repoRoot string) (Labels, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repoRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	var l Labels
	var err error
	if l.Version, err = git("describe", "--tags", "--always", "--dirty", "--abbrev=12"); err != nil {
		return Labels{}, err
	}
	if l.Revision, err = git("rev-parse", "HEAD"); err != nil {
		return Labels{}, err
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = git("log", "-1", "--format=%ct"); err != nil {
			return Labels{}, err
		}
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return Labels{}, fmt.Errorf("commit time %q: %w", epoch, err)
	}
	l.Created = time.Unix(sec, 0).UTC()
	if l.Source, err = moduleSource(repoRoot); err != nil {
		return Labels{}, err
	}
	return l, nil
}

// moduleSource is the https URL of the module path in repoRoot's go.mod.
func moduleSource(repoRoot string) (string, error) {
	f, err := os.Open(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return "https://" + strings.Trim(strings.TrimSpace(mod), `"`), nil
		}
	}
	return "", fmt.Errorf("no module line in %s/go.mod", repoRoot)
}

// HoldfastOptions say what the Holdfast image is built from.
type HoldfastOptions struct {
	// RepoRoot is the Holdfast checkout; its root package is the holdfast binary.
	RepoRoot string
	// Platforms are the architectures to build, each with its restic.
	Platforms []Platform
	// CACertificates is a directory of PEM CA certificates (*.crt) that become the
	// image's CA bundle; empty is DefaultCACertificates.
	CACertificates string
	Labels         Labels
	// Log receives one line per step; nil discards.
	Log func(format string, args ...any)
}

// HoldfastImage builds the Holdfast image for every platform of o as one OCI image index.
func HoldfastImage(ctx context.Context, o HoldfastOptions) (v1.ImageIndex, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if len(o.Platforms) == 0 {
		return nil, fmt.Errorf("no platform to build the holdfast image for")
	}
	caDir := o.CACertificates
	if caDir == "" {
		caDir = DefaultCACertificates
	}
	bundle, n, err := CABundle(caDir)
	if err != nil {
		return nil, err
	}
	o.Log("images: %d CA certificates from %s", n, caDir)
	work, err := os.MkdirTemp("", "holdfast-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	ann := o.Labels.annotations()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		bin := filepath.Join(work, p.Arch, "holdfast")
		o.Log("images: building holdfast for linux/%s (CGO_ENABLED=0)", p.Arch)
		if err := goBuild(ctx, o.RepoRoot, bin, ".", p.Arch); err != nil {
			return nil, err
		}
		files, err := readFiles(map[string]string{HoldfastBinary: bin, ResticBinary: p.Restic})
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", p.Arch, err)
		}
		files = append(files, file{path: CABundlePath, mode: 0o644, data: bundle})
		files = append(files, baseFiles()...)
		img, err := newImage(files, v1.Config{
			Entrypoint: []string{HoldfastBinary},
			Env:        []string{"PATH=/usr/local/bin", "HOME=/tmp"},
			WorkingDir: "/",
			User:       fmt.Sprintf("%d:%d", NonRootUser, NonRootUser),
			Labels:     ann,
		}, p.Arch, o.Labels.Created, ann)
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", p.Arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: p.Arch}},
		})
	}
	return mutate.Annotations(idx, ann).(v1.ImageIndex), nil
}

// CABundle concatenates the PEM certificates (*.crt) of dir in name order, and says
// how many there are. Every file must hold only certificates.
func CABundle(dir string) ([]byte, int, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return nil, 0, err
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, 0, fmt.Errorf("no CA certificates (*.crt) in %s: install Debian's ca-certificates package (`make image` does)", dir)
	}
	var bundle bytes.Buffer
	n := 0
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, 0, err
		}
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				if len(bytes.TrimSpace(rest)) > 0 {
					return nil, 0, fmt.Errorf("%s: text that is not a PEM certificate", name)
				}
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, 0, fmt.Errorf("%s: a PEM %s, not a certificate", name, block.Type)
			}
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, 0, fmt.Errorf("%s: %w", name, err)
			}
			n++
		}
		bundle.Write(bytes.TrimSpace(b))
		bundle.WriteByte('\n')
	}
	return bundle.Bytes(), n, nil
}
