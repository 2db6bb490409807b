// Package kustomize builds the repository's kustomizations in tests, as kubectl, Argo
// CD and Flux do, and writes overlays that refer to them the way a user's GitOps
// repository does.
package kustomize

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// Build runs kustomize on dir, a directory of the repository (relative to its root) or
// an absolute one, and returns its objects.
func Build(dir string) ([]*unstructured.Unstructured, error) {
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(testenv.RepoRoot(), dir)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range resMap.Resources() {
		// Through JSON, so numbers are int64 and float64 as unstructured expects.
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		objs = append(objs, u)
	}
	return objs, nil
}

// Overlay writes into dir a kustomization whose resources and components are
// repository directories, as a user's GitOps repository refers to Holdfast, and
// returns dir. extra is appended to the kustomization.
func Overlay(dir string, resources, components []string, extra string) (string, error) {
	var sb strings.Builder
	list := func(key string, paths []string) error {
		if len(paths) == 0 {
			return nil
		}
		sb.WriteString(key + ":\n")
		for _, p := range paths {
			r, err := filepath.Rel(dir, filepath.Join(testenv.RepoRoot(), p))
			if err != nil {
				return err
			}
			sb.WriteString("- " + r + "\n")
		}
		return nil
	}
	if err := list("resources", resources); err != nil {
		return "", err
	}
	if err := list("components", components); err != nil {
		return "", err
	}
	sb.WriteString(extra)
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(sb.String()), 0o644)
}
