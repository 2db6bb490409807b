package confinedfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// TarStats counts what ExtractTar restored and what it had to leave out.
type TarStats struct {
	Dirs, Files, Symlinks, HardLinks int64
	// Skipped counts device nodes, FIFOs and sockets, which a volume restore does not
	// recreate.
	Skipped int64
}

// ExtractTar restores a tar stream (restic dump, kopia's tar output) into the writer's
// directory: every entry goes through the Writer, so none can land outside it.
// Directory metadata is applied after their contents, so their times stick.
func ExtractTar(ctx context.Context, w *Writer, r io.Reader) (TarStats, error) {
	var stats TarStats
	type dirMeta struct {
		name string
		meta Meta
	}
	var dirs []dirMeta
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return stats, fmt.Errorf("reading the snapshot stream: %w", err)
		}
		meta := Meta{Mode: fs.FileMode(hdr.Mode).Perm() | specialBits(hdr.Mode), UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := w.Mkdir(hdr.Name); err != nil {
				return stats, err
			}
			dirs = append(dirs, dirMeta{hdr.Name, meta})
			stats.Dirs++
			continue
		case tar.TypeReg:
			if _, err := w.WriteFileWithMetadata(hdr.Name, tr, meta); err != nil {
				return stats, err
			}
			stats.Files++
			continue
		case tar.TypeSymlink:
			if err := w.Symlink(hdr.Name, hdr.Linkname); err != nil {
				return stats, err
			}
			meta.Symlink = true
			stats.Symlinks++
		case tar.TypeLink:
			if err := w.Link(hdr.Name, hdr.Linkname); err != nil {
				return stats, err
			}
			stats.HardLinks++
			continue // the link shares the metadata of its target
		default:
			stats.Skipped++
			continue
		}
		if err := w.SetMetadata(hdr.Name, meta); err != nil {
			return stats, err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := w.SetMetadata(dirs[i].name, dirs[i].meta); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

func specialBits(mode int64) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
