// Command holdfast-image builds the Holdfast image (`make image`): holdfast and restic
// for each platform, the CA roots, user 65532 and labels from git, written as one OCI
// archive that a registry tool can push.
//
//	holdfast-image [-out FILE] [-platforms linux/amd64,linux/arm64] [-tools-bin DIR] [-version V] [-ca-certificates DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-dev/holdfast/test/images"
)

func main() {
	out := flag.String("out", "bin/holdfast-image.tar", "the OCI archive to write")
	platformList := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms (linux only)")
	toolsBin := flag.String("tools-bin", "bin/tools", "where `test/tools/build.sh --platform linux/<arch> restic` put restic (<dir>/linux-<arch>/restic)")
	version := flag.String("version", "", "the version label and tag; empty: `git describe --tags --always --dirty`")
	caDir := flag.String("ca-certificates", images.DefaultCACertificates, "directory of PEM CA certificates (*.crt) that become the image's CA bundle")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *out, *platformList, *toolsBin, *version, *caDir); err != nil {
		fmt.Fprintf(os.Stderr, "holdfast-image: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, platformList, toolsBin, version, caDir string) error {
	start := time.Now()
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	var platforms []images.Platform
	var arches []string
	for _, p := range strings.Split(platformList, ",") {
		arch, ok := strings.CutPrefix(strings.TrimSpace(p), "linux/")
		if !ok || arch == "" {
			return fmt.Errorf("platform %q: only linux/<arch> platforms are built", p)
		}
		restic := images.ResticFor(toolsBin, arch)
		if _, err := os.Stat(restic); err != nil {
			return fmt.Errorf("no restic for linux/%s: %w (make image builds it: bash test/tools/build.sh --platform linux/%s restic)", arch, err, arch)
		}
		platforms = append(platforms, images.Platform{Arch: arch, Restic: restic})
		arches = append(arches, "linux/"+arch)
	}
	labels, err := images.LabelsFromGit(ctx, repo)
	if err != nil {
		if version == "" {
			return fmt.Errorf("%w (outside a git checkout, say the version with -version)", err)
		}
		labels = images.Labels{Version: version}
	}
	if version != "" {
		labels.Version = version
	}
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	idx, err := images.HoldfastImage(ctx, images.HoldfastOptions{
		RepoRoot: repo, Platforms: platforms, CACertificates: caDir, Labels: labels, Log: logf,
	})
	if err != nil {
		return err
	}
	ref := "holdfast:" + labels.Tag()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := images.WriteArchive(out, ref, idx); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("image: wrote %s in %.0fs: %s for %s, %.1f MiB, index %s\n",
		out, time.Since(start).Seconds(), ref, strings.Join(arches, " "), float64(st.Size())/(1<<20), digest)
	fmt.Printf("image: push it with your registry tool, e.g.\n  skopeo copy --all oci-archive:%s docker://<registry>/holdfast:%s\n", out, labels.Tag())
	return nil
}
