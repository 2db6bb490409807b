package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of the descriptor in an archive's index.json that name the image.
const (
	// refNameAnnotation is the OCI image layout's name of an image: its tag, which
	// `skopeo copy oci-archive:FILE:TAG` and the like select it by.
	refNameAnnotation = "org.opencontainers.image.ref.name"
	// containerdNameAnnotation is the full name `ctr images import` stores the image
	// under. containerd normalises the names of docker-format archives but takes OCI
	// ones as they are, and the kubelet asks for the normalised form of the name a pod
	// gives, so the archive carries that form.
	containerdNameAnnotation = "io.containerd.image.name"
)

// blob is one file under blobs/ of an OCI image layout.
type blob struct {
	size int64
	open func() (io.ReadCloser, error)
}

// WriteArchive writes idx, named ref (name:tag, no registry host), to path as an OCI
// image layout in one tar file: what `skopeo copy oci-archive:`, `ctr images import`
// and other OCI tools read. The same index gives the same bytes: entries are sorted
// and carry no time.
func WriteArchive(path, ref string, idx v1.ImageIndex) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return fmt.Errorf("image name %q has no tag", ref)
	}
	blobs := map[string]blob{}
	if err := collectIndex(idx, blobs); err != nil {
		return err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	size, err := idx.Size()
	if err != nil {
		return err
	}
	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt, Digest: digest, Size: size,
			Annotations: map[string]string{refNameAnnotation: tagged.Tag(), containerdNameAnnotation: named.String()},
		}},
	}
	indexJSON, err := json.Marshal(top)
	if err != nil {
		return err
	}

	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	for _, file := range files {
		if err := writeTarFile(tw, file.name, int64(len(file.data)), func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(file.data)), nil
		}); err != nil {
			return err
		}
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	for _, h := range hexes {
		if err := writeTarFile(tw, "blobs/sha256/"+h, blobs[h].size, blobs[h].open); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeTarFile(tw *tar.Writer, name string, size int64, open func() (io.ReadCloser, error)) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	n, err := io.Copy(tw, rc)
	if err != nil {
		return fmt.Errorf("%s: %w", path.Base(name), err)
	}
	if n != size {
		return fmt.Errorf("%s: %d bytes, the descriptor says %d", path.Base(name), n, size)
	}
	return nil
}

// collectIndex adds the blobs of idx, of the indexes and images it lists and of
// their configs and layers.
func collectIndex(idx v1.ImageIndex, blobs map[string]blob) error {
	if err := addManifest(idx, blobs); err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := collectIndex(child, blobs); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			if err := collectImage(img, blobs); err != nil {
				return err
			}
		default:
			return fmt.Errorf("index entry %s has media type %s, neither an image nor an index", d.Digest, d.MediaType)
		}
	}
	return nil
}

func collectImage(img v1.Image, blobs map[string]blob) error {
	if err := addManifest(img, blobs); err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	blobs[cfgName.Hex] = bytesBlob(cfg)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		blobs[d.Hex] = blob{size: size, open: l.Compressed}
	}
	return nil
}

func addManifest(m interface {
	RawManifest() ([]byte, error)
	Digest() (v1.Hash, error)
}, blobs map[string]blob) error {
	raw, err := m.RawManifest()
	if err != nil {
		return err
	}
	d, err := m.Digest()
	if err != nil {
		return err
	}
	blobs[d.Hex] = bytesBlob(raw)
	return nil
}

func bytesBlob(b []byte) blob {
	return blob{size: int64(len(b)), open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}
