package repository

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/fidelity"
)

func known(path, field, why string) fidelity.Known {
	return fidelity.Known{Path: path, Field: field, Why: why}
}

func concat(lists ...[]fidelity.Known) []fidelity.Known {
	var out []fidelity.Known
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestRoundTripFidelity backs up the tree of every awkward case (package fidelity)
// with each uploader, restores it into an empty directory and compares the two trees
// entry by entry: type, mode, owner, size, time, content, attributes, link targets,
// hard-link groups and sparseness.
func TestRoundTripFidelity(t *testing.T) {
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ctx := ctxFor(t)
			r := filesystemRepository(t, uploader)
			src := t.TempDir()
			skipped, err := fidelity.Generate(src)
			if err != nil {
				t.Fatal(err)
			}
			for p, why := range skipped {
				t.Logf("case %q left out: %s", p, why)
			}
			want, err := fidelity.Scan(src)
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/fidelity"})
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			t.Logf("backup skipped %+v", res.Skipped)
			target := t.TempDir()
			restored, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Logf("restore did not restore %+v", restored.NotRestored)
			got, err := fidelity.Scan(target)
			if err != nil {
				t.Fatal(err)
			}
			// What did not come back of the kinds a restore counts is counted.
			if n, lost := restored.NotRestored.FIFOs, fidelity.Missing(want, got, "fifo"); n != lost {
				t.Errorf("the restore counts %d FIFOs as not restored, but %d did not come back", n, lost)
			}
			if n, lost := restored.NotRestored.Devices, fidelity.Missing(want, got, "chardev"); n != lost {
				t.Errorf("the restore counts %d device nodes as not restored, but %d did not come back", n, lost)
			}
			unknown, stale := fidelity.Check(fidelity.Compare(want, got), fidelity.KnownDifferences(string(uploader)), want)
			for _, d := range unknown {
				t.Errorf("difference not on the known list: %s", d)
			}
			for _, k := range stale {
				t.Errorf("known difference %q %s (%s) no longer occurs: remove it from the list and from docs/agent.md", k.Path, k.Field, k.Why)
			}
		})
	}
}

// TestKopiaAttributesFileIsNotCounted: the attributes file Holdfast adds to a kopia
// snapshot is neither counted as a file of the volume nor restored into it.
func TestKopiaAttributesFileIsNotCounted(t *testing.T) {
	ctx := ctxFor(t)
	r := filesystemRepository(t, v1.UploaderKopia)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "alpha", "b": "bravo"})
	if err := unix.Lsetxattr(filepath.Join(src, "a"), "user.note", []byte("kept"), 0); err != nil {
		t.Skipf("the file system keeps no user.* attributes: %v", err)
	}
	res, err := r.Backup(ctx, BackupRequest{Dir: src, SourcePath: "/pvc/attrs"})
	if err != nil {
		t.Fatal(err)
	}
	if res.TotalFiles != 2 || res.TotalBytes != 10 {
		t.Errorf("backup counted %d files, %d bytes; want 2, 10", res.TotalFiles, res.TotalBytes)
	}
	target := t.TempDir()
	restored, err := r.Restore(ctx, RestoreRequest{SnapshotID: res.SnapshotID, TargetDir: target})
	if err != nil {
		t.Fatal(err)
	}
	if restored.TotalFiles != 2 || restored.TotalBytes != 10 {
		t.Errorf("restore counted %d files, %d bytes; want 2, 10", restored.TotalFiles, restored.TotalBytes)
	}
	entries, _ := os.ReadDir(target)
	if len(entries) != 2 {
		t.Errorf("restored %v, want a and b only", entries)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(target, "a"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("a's user.note = %q (err %v), want \"kept\"", buf[:max(n, 0)], err)
	}
}
