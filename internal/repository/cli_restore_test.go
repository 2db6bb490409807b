package repository

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/kopiarestore"
	"github.com/holdfast-dev/holdfast/test/fidelity"
)

// cliKnownDifferences are what `kopia restore` (the CLI) gives back differently from
// Holdfast's restore of the same snapshot: docs/agent.md says the same.
var cliKnownDifferences = concat(
	[]fidelity.Known{
		known(kopiarestore.AttributesName, "extra", "the attributes file is restored as a file; setfattr --restore applies it"),
		known(kopiarestore.SpecialName, "extra", "the list of FIFOs and device nodes is restored as a file"),
		known(kopiarestore.LinksName, "extra", "the list of hard links is restored as a file"),
		known(fidelity.XattrFile, "xattrs", "the CLI does not apply the attributes file"),
		known(".", "xattrs", "as above"),
		known(fidelity.XattrDir, "xattrs", "as above"),
		known(fidelity.ACLFile, "xattrs", "as above"),
		known(fidelity.ACLDir, "xattrs", "as above"),
		known(fidelity.CapFile, "xattrs", "as above"),
		known(fidelity.BadUTF8Dir+"/inside", "missing", "in a directory restored under its encoded name"),
		known(kopiarestore.EncodeName(fidelity.BadUTF8Dir)+"/inside", "extra", "as above"),
		known(fidelity.Sparse, "sparse", "the CLI writes holes only with --write-sparse-files"),
		known(fidelity.FIFO, "missing", "kopia stores no FIFOs: the CLI does not read Holdfast's list of them"),
		known(fidelity.Socket, "missing", "sockets are not backed up"),
		known(fidelity.CharDev, "missing", "as FIFOs"),
		known(fidelity.FIFOBadUTF8, "missing", "as FIFOs"),
		known(fidelity.HardBadTarget, "hardlink", "the CLI does not read Holdfast's list of hard links"),
	},
	fidelity.HardLinksCopied("the CLI does not read Holdfast's list of hard links"),
	encodedNames(),
	symlinkTimes(),
)

// encodedNames: the CLI writes each name that Holdfast encodes under its encoded name.
func encodedNames() []fidelity.Known {
	names := append([]string{fidelity.BadUTF8, fidelity.BadUTF8Dir, fidelity.HardBadUTF8}, fidelity.EscapeLookalikes...)
	isName := map[string]bool{}
	for _, n := range names {
		isName[n] = true
	}
	var out []fidelity.Known
	for _, n := range names {
		e := kopiarestore.EncodeName(n)
		switch {
		case e == n:
		case isName[e]:
			// Another file of the volume has the encoded name: the CLI writes n there,
			// and that file under its own encoded name (no data is lost).
			why := "the CLI writes " + fmt.Sprintf("%q", n) + " under this file's name"
			out = append(out, known(n, "missing", "the CLI writes encoded names as stored"),
				known(e, "content", why), known(e, "size", why), known(e, "mtime", why))
		default:
			out = append(out, known(e, "extra", "the CLI writes encoded names as stored"))
			if !isEncodingOfAnother(n, names) {
				out = append(out, known(n, "missing", "the CLI writes encoded names as stored"))
			}
		}
	}
	return out
}

func isEncodingOfAnother(n string, names []string) bool {
	for _, m := range names {
		if m != n && kopiarestore.EncodeName(m) == n {
			return true
		}
	}
	return false
}

// symlinkTimes: the CLI sets a symlink's time to the microsecond.
func symlinkTimes() []fidelity.Known {
	var out []fidelity.Known
	for _, l := range []string{fidelity.LinkIn, fidelity.LinkDir, fidelity.LinkOut, fidelity.LinkUp, fidelity.LinkDangling} {
		out = append(out, known(l, "mtime", "the CLI sets a symlink's time to the microsecond"))
	}
	return out
}

// TestKopiaCLIRestoresHoldfastSnapshots: the plain kopia CLI restores a snapshot
// Holdfast took, every file with its content; what it gives back differently from
// Holdfast's restore is exactly cliKnownDifferences, plus the times of directories
// (kopia's restore gives each the newest time below it).
func TestKopiaCLIRestoresHoldfastSnapshots(t *testing.T) {
	ctx := ctxFor(t)
	cfg, _, want, res := backUpTheTree(t, v1.UploaderKopia)

	run := kopiaCLI(t, ctx, filepath.Join(cfg.Store.Filesystem.Path, cfg.location()), cfg.Password)
	target := t.TempDir()
	run("restore", res.SnapshotID, target)

	got, err := fidelity.Scan(target)
	if err != nil {
		t.Fatal(err)
	}
	diffs := fidelity.Compare(want, got)
	var rest []fidelity.Difference
	for _, d := range diffs {
		w, inSource := want[d.Path]
		switch {
		case d.Field == "mtime" && inSource && w.Type == "dir":
			// kopia's restore: the newest time below the directory.
		default:
			rest = append(rest, d)
		}
	}
	unknown, stale := fidelity.Check(rest, cliKnownDifferences, want)
	reportCLIDifferences(t, unknown, stale)
}

// TestResticCLIRestoresHoldfastSnapshots: the plain restic CLI restores a snapshot
// Holdfast took; it gives back what Holdfast's restore does, and device nodes, except
// the volume root's metadata and holes without --sparse.
func TestResticCLIRestoresHoldfastSnapshots(t *testing.T) {
	ctx := ctxFor(t)
	cfg, src, want, res := backUpTheTree(t, v1.UploaderRestic)
	target := t.TempDir()
	cmd := exec.CommandContext(ctx, cfg.ResticPath, "restore", res.SnapshotID+":"+src, "--target", target)
	cmd.Env = []string{"RESTIC_REPOSITORY=" + ResticRepository(cfg), "RESTIC_PASSWORD=" + cfg.Password,
		"RESTIC_CACHE_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restic restore: %v\n%s", err, out)
	}
	got, err := fidelity.Scan(target)
	if err != nil {
		t.Fatal(err)
	}
	known := []fidelity.Known{
		known(fidelity.Socket, "missing", "restic does not store sockets"),
		known(".", "mode", "restic restore <snapshot>:<folder> leaves the target directory's own metadata"),
		known(".", "owner", "as mode"),
		known(".", "mtime", "as mode"),
		known(".", "xattrs", "as mode"),
		known(fidelity.Sparse, "sparse", "restic restore writes holes only with --sparse"),
	}
	unknown, stale := fidelity.Check(fidelity.Compare(want, got), known, want)
	reportCLIDifferences(t, unknown, stale)
}

// backUpTheTree backs up the tree of every awkward case (package fidelity) into a new
// filesystem repository of uploader with Holdfast, and returns the repository's
// config, the tree's directory, its manifest and the backup.
func backUpTheTree(t *testing.T, uploader v1.Uploader) (Config, string, fidelity.Manifest, BackupResult) {
	t.Helper()
	ctx := ctxFor(t)
	cfg := testConfig(t, Store{Filesystem: &FilesystemStore{Path: t.TempDir()}}, uploader, "cli")
	if err := Initialize(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	src := t.TempDir()
	if _, err := fidelity.Generate(src); err != nil {
		t.Fatal(err)
	}
	want, err := fidelity.Scan(src)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/cli"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, src, want, res
}

// reportCLIDifferences fails the test on each difference a CLI restore made that its
// list does not know, and on each listed one that no longer occurs.
func reportCLIDifferences(t *testing.T, unknown []fidelity.Difference, stale []fidelity.Known) {
	t.Helper()
	for _, d := range unknown {
		t.Errorf("difference not on the CLI's known list: %s", d)
	}
	for _, k := range stale {
		t.Errorf("known CLI difference %q %s (%s) no longer occurs", k.Path, k.Field, k.Why)
	}
}
