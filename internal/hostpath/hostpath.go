package hostpath

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ErrOutside marks a hostPath whose directory is not strictly under an allowed root,
// or that names its way there with "..": Holdfast does not read or write it.
var ErrOutside = errors.New("hostPath outside --host-path-roots")

// ErrLink marks a hostPath whose way down from its root passes a symbolic link (or
// leaves the root): the agent follows none there, as a link could lead anywhere on the
// node.
var ErrLink = errors.New("hostPath through a symbolic link")

// Roots are the host directories under which hostPath PersistentVolumes are backed up
// and restored; none by default.
type Roots []string

// ParseRoots reads the comma-separated value of --host-path-roots. Each root must be
// an absolute, clean path other than "/"; spaces around commas and empty items are
// ignored.
func ParseRoots(s string) (Roots, error) {
	var out Roots
	for _, item := range strings.Split(s, ",") {
		root := strings.TrimSpace(item)
		switch {
		case root == "":
			continue
		case !filepath.IsAbs(root):
			return nil, fmt.Errorf("host path root %q is not an absolute path", root)
		case root != filepath.Clean(root) || hasDotDot(root):
			return nil, fmt.Errorf("host path root %q is not a clean path (write it as %q)", root, filepath.Clean(root))
		case root == "/":
			return nil, fmt.Errorf("host path root %q would allow every directory of the node", root)
		}
		out = append(out, root)
	}
	return out, nil
}

// String is the flag's value.
func (r Roots) String() string { return strings.Join(r, ",") }

// Set parses a flag value (flag.Value) and adds its roots: the flag may be given more
// than once, so that a kustomize component and an overlay each add theirs.
func (r *Roots) Set(s string) error {
	roots, err := ParseRoots(s)
	if err != nil {
		return err
	}
	*r = append(*r, roots...)
	return nil
}

// Dir is a hostPath directory under an allowed root: Root joined with Rel.
type Dir struct {
	Root string
	// Rel is the path below Root, never "." nor with "..".
	Rel string
}

// Path is the directory's host path.
func (d Dir) Path() string { return filepath.Join(d.Root, d.Rel) }

// Under returns the directory of path below the first root that holds it strictly,
// or ErrOutside. A path with ".." in it is refused even where it would lead back in:
// it is not how provisioners write paths. The error names no host path: the agent's
// status messages are read by tenants.
func (r Roots) Under(path string) (Dir, error) {
	if !filepath.IsAbs(path) {
		return Dir{}, fmt.Errorf("%w: the path is not absolute", ErrOutside)
	}
	if hasDotDot(path) {
		return Dir{}, fmt.Errorf("%w: the path has a \"..\" component", ErrOutside)
	}
	clean := filepath.Clean(path)
	for _, root := range r {
		rel, err := filepath.Rel(root, clean)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		return Dir{Root: root, Rel: rel}, nil
	}
	if len(r) == 0 {
		return Dir{}, fmt.Errorf("%w: no --host-path-roots are set", ErrOutside)
	}
	return Dir{}, fmt.Errorf("%w: the path is not strictly under any of the %d roots", ErrOutside, len(r))
}

// Of returns the directory of a hostPath PersistentVolume under the roots: ok is false
// for a PersistentVolume that is not hostPath, err is ErrOutside for one outside them.
func (r Roots) Of(pv *corev1.PersistentVolume) (dir Dir, ok bool, err error) {
	if pv == nil || pv.Spec.HostPath == nil {
		return Dir{}, false, nil
	}
	dir, err = r.Under(pv.Spec.HostPath.Path)
	return dir, true, err
}

func hasDotDot(path string) bool {
	for _, part := range strings.Split(path, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}
