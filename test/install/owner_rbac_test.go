package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

// ownerSite is a place in the code that sets an ownerReference with
// blockOwnerDeletion, and the kind of the owner it names.
type ownerSite struct {
	pos  string
	kind string // empty when the owner's kind is not known statically
}

// The functions that set blockOwnerDeletion on the reference they make.
// SetOwnerReference sets it only with WithBlockOwnerDeletion(true); it counts as well,
// rather than this test reading options.
var blockingOwnerFuncs = map[string]bool{
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil.SetControllerReference": true,
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil.SetOwnerReference":      true,
	"k8s.io/apimachinery/pkg/apis/meta/v1.NewControllerRef":                               true,
}

// ownerSites type-checks the non-test Go files of the packages matching patterns (with
// the export data `go list -export` gives for their imports) and returns every call of
// a blockingOwnerFuncs function and every metav1.OwnerReference literal that sets
// BlockOwnerDeletion.
func ownerSites(t *testing.T, patterns ...string) []ownerSite {
	t.Helper()
	type listed struct {
		ImportPath, Dir, Export string
		// CompiledGoFiles, not GoFiles: a package that uses cgo type-checks only
		// with the Go files cgo makes of it.
		CompiledGoFiles []string
		DepOnly         bool
	}
	cmd := exec.Command("go", append([]string{"list", "-export", "-compiled", "-deps", "-json=ImportPath,Dir,Export,CompiledGoFiles,DepOnly"}, patterns...)...)
	cmd.Dir = testenv.RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", patterns, err, stderr.String())
	}
	exports := map[string]string{}
	var targets []listed
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if !p.DepOnly {
			targets = append(targets, p)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		if exports[path] == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(exports[path])
	})
	var sites []ownerSite
	for _, p := range targets {
		var files []*ast.File
		for _, f := range p.CompiledGoFiles {
			if !filepath.IsAbs(f) {
				f = filepath.Join(p.Dir, f)
			}
			af, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, af)
		}
		info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}, Uses: map[*ast.Ident]types.Object{}}
		if _, err := (&types.Config{Importer: imp}).Check(p.ImportPath, fset, files, info); err != nil {
			t.Fatalf("type-checking %s: %v", p.ImportPath, err)
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					fn := calledFunc(info, n.Fun)
					if fn == nil || fn.Pkg() == nil || !blockingOwnerFuncs[fn.Pkg().Path()+"."+fn.Name()] || len(n.Args) == 0 {
						return true
					}
					sites = append(sites, ownerSite{pos: fset.Position(n.Pos()).String(), kind: kindOfType(info.TypeOf(n.Args[0]))})
				case *ast.CompositeLit:
					if !isOwnerReference(info.TypeOf(n)) {
						return true
					}
					var kind string
					blocking := false
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						switch key, _ := kv.Key.(*ast.Ident); {
						case key == nil:
						case key.Name == "BlockOwnerDeletion":
							blocking = true
						case key.Name == "Kind":
							if v := info.Types[kv.Value].Value; v != nil {
								kind = strings.Trim(v.ExactString(), `"`)
							}
						}
					}
					if blocking {
						sites = append(sites, ownerSite{pos: fset.Position(n.Pos()).String(), kind: kind})
					}
				}
				return true
			})
		}
	}
	return sites
}

func calledFunc(info *types.Info, fun ast.Expr) *types.Func {
	var id *ast.Ident
	switch f := fun.(type) {
	case *ast.Ident:
		id = f
	case *ast.SelectorExpr:
		id = f.Sel
	case *ast.IndexExpr: // an instantiated generic function
		return calledFunc(info, f.X)
	default:
		return nil
	}
	fn, _ := info.Uses[id].(*types.Func)
	return fn
}

// kindOfType is the kind of an owner passed as a pointer to an API type, or "" when
// the static type does not say (an interface such as client.Object).
func kindOfType(t types.Type) string {
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	if n, ok := t.(*types.Named); ok {
		if _, isStruct := n.Underlying().(*types.Struct); isStruct {
			return n.Obj().Name()
		}
	}
	return ""
}

func isOwnerReference(t types.Type) bool {
	n, ok := t.(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "k8s.io/apimachinery/pkg/apis/meta/v1" && n.Obj().Name() == "OwnerReference"
}

// TestRolesGrantFinalizersOfEveryOwner is the lint behind restores on OpenShift:
// with OwnerReferencesPermissionEnforcement, an object whose ownerReference sets
// blockOwnerDeletion (SetControllerReference does) can only be created by who may
// update the owner's finalizers. For each place the manager's or the agent's code sets
// such a reference, the component's generated ClusterRole must grant
// `<owner>/finalizers: update`, or every such create is forbidden there.
func TestRolesGrantFinalizersOfEveryOwner(t *testing.T) {
	b := build(t, "config/default")
	resources := map[string]rbacv1.PolicyRule{} // kind -> its group and plural
	for _, o := range b.ofKind("CustomResourceDefinition") {
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		plural, _, _ := unstructured.NestedString(o.Object, "spec", "names", "plural")
		group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
		resources[kind] = rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{plural}}
	}
	all := 0
	for _, c := range []struct {
		role     string
		patterns []string
	}{
		{"holdfast-manager", []string{"./controllers/...", "./internal/..."}},
		{"holdfast-agent", []string{"./agent/..."}},
	} {
		role := into[rbacv1.ClusterRole](t, b.find("ClusterRole", c.role))
		sites := ownerSites(t, c.patterns...)
		all += len(sites)
		for _, s := range sites {
			owner, ok := resources[s.kind]
			switch {
			case s.kind == "":
				t.Errorf("%s sets blockOwnerDeletion on an owner whose kind this test cannot tell: pass a typed object, or teach the test", s.pos)
			case !ok:
				t.Errorf("%s makes a %s an owner with blockOwnerDeletion; it is not a Holdfast kind: teach this test its resource", s.pos, s.kind)
			case !grants(role.Rules, owner.APIGroups[0], owner.Resources[0]+"/finalizers", "update"):
				t.Errorf("%s makes a %s an owner with blockOwnerDeletion, but ClusterRole %s does not grant update on %s/finalizers: "+
					"add a +kubebuilder:rbac marker (resources=%s/finalizers,verbs=update) and run make manifests",
					s.pos, s.kind, c.role, owner.Resources[0], owner.Resources[0])
			}
		}
	}
	if all == 0 {
		t.Error("found no place that sets an ownerReference; the restore controller makes each VolumeRestore own its PodVolumeRestores, so the search is broken")
	}
}

func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
			(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*"))
	})
}
