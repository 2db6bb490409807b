package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/version"
	apiservercel "k8s.io/apiserver/pkg/cel"
	"k8s.io/apiserver/pkg/cel/common"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/library"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Field paths of the two selector expressions, as reported in errors.
const (
	FieldNamespaces = "spec.selector.namespaces"
	FieldVolumes    = "spec.selector.volumes"
	// FieldCoverageExclude is the coverage exclusion, an expression over the same
	// variables as FieldVolumes.
	FieldCoverageExclude = "spec.coverage.exclude"
)

// Limits on an expression. The estimated cost is the checker's worst case over the
// declared types (see the assumed bounds in schema.go); the runtime limit stops one
// evaluation that still runs long. Both are in CEL cost units (about one unit per
// cheap operation), the same units Kubernetes uses for ValidatingAdmissionPolicy.
const (
	MaxExpressionLength        = v1.MaxExpressionLength
	MaxEstimatedCost    uint64 = 1_000_000
	RuntimeCostLimit    uint64 = 1_000_000
	// PassCostBudget bounds the cost of all the evaluations of one selection pass
	// (one Cache): the per-evaluation limit alone lets tenant-sized labels and
	// annotations on thousands of pods keep the controller's one worker busy. A
	// pass that spends it evaluates nothing more (ErrorBudget).
	PassCostBudget uint64 = 100_000_000
)

// Variable names the expressions see.
const (
	VarNamespace = "namespace"
	VarPod       = "pod"
	VarVolume    = "volume"
	VarPVC       = "pvc"
)

// Engine compiles selectors and caches the compiled programs per policy generation. It
// is safe for concurrent use.
type Engine struct {
	nsNew, nsStored   *cel.Env
	volNew, volStored *cel.Env
	// podNew, podStored compile the pods expression of a hook (spec.hooks[i].pods),
	// which sees only `namespace` and `pod`.
	podNew, podStored *cel.Env

	nsSchema, podSchema, volSchema, pvcSchema common.Schema
	nsSizes, volSizes                         *sizeEstimator

	// runtimeCostLimit is RuntimeCostLimit; tests lower it.
	runtimeCostLimit uint64

	mu         sync.Mutex
	cache      map[string]*cacheEntry     // by policy name (policies are cluster-scoped)
	exclusions map[string]*exclusionEntry // by policy name
}

type exclusionEntry struct {
	uid        ktypes.UID
	generation int64
	expr       string
	compiled   *Expression
	err        error
}

type cacheEntry struct {
	uid        ktypes.UID
	generation int64
	selector   v1.VolumeSelector
	compiled   *Selector
	err        error
}

// NewEngine builds the two CEL environments (one for the namespace expression, one for
// the volume expression), each in a strict variant for new expressions (admission) and a
// permissive one for expressions already stored.
func NewEngine() (*Engine, error) {
	e := &Engine{cache: map[string]*cacheEntry{}, exclusions: map[string]*exclusionEntry{}, runtimeCostLimit: RuntimeCostLimit}
	nsDecl, nsSchema := declType("holdfast.Namespace", reflect.TypeFor[corev1.Namespace]())
	podDecl, podSchema := declType("holdfast.Pod", reflect.TypeFor[corev1.Pod]())
	volDecl, volSchema := declType("holdfast.Volume", reflect.TypeFor[corev1.Volume]())
	pvcDecl, pvcSchema := declType("holdfast.PersistentVolumeClaim", reflect.TypeFor[corev1.PersistentVolumeClaim]())
	e.nsSchema, e.podSchema, e.volSchema, e.pvcSchema = nsSchema, podSchema, volSchema, pvcSchema
	e.nsSizes = &sizeEstimator{roots: map[string]*apiservercel.DeclType{nsIdent: nsDecl}}
	e.volSizes = &sizeEstimator{roots: map[string]*apiservercel.DeclType{
		nsIdent: nsDecl, VarPod: podDecl, VarVolume: volDecl, VarPVC: pvcDecl}}

	base := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	build := func(decls []*apiservercel.DeclType, vars ...cel.EnvOption) (*cel.Env, *cel.Env, error) {
		set, err := base.Extend(environment.VersionedOptions{
			IntroducedVersion: version.MajorMinor(1, 0),
			EnvOptions:        vars,
			DeclTypes:         decls,
		})
		if err != nil {
			return nil, nil, err
		}
		newEnv, err := set.Env(environment.NewExpressions)
		if err != nil {
			return nil, nil, err
		}
		storedEnv, err := set.Env(environment.StoredExpressions)
		return newEnv, storedEnv, err
	}
	var err error
	e.nsNew, e.nsStored, err = build([]*apiservercel.DeclType{nsDecl},
		cel.Variable(nsIdent, nsDecl.CelType()))
	if err != nil {
		return nil, fmt.Errorf("building the namespace selector environment: %w", err)
	}
	e.volNew, e.volStored, err = build([]*apiservercel.DeclType{nsDecl, podDecl, volDecl, pvcDecl},
		cel.Variable(nsIdent, nsDecl.CelType()),
		cel.Variable(VarPod, podDecl.CelType()),
		cel.Variable(VarVolume, volDecl.CelType()),
		cel.Variable(VarPVC, pvcDecl.CelType()))
	if err != nil {
		return nil, fmt.Errorf("building the volume selector environment: %w", err)
	}
	e.podNew, e.podStored, err = build([]*apiservercel.DeclType{nsDecl, podDecl},
		cel.Variable(nsIdent, nsDecl.CelType()),
		cel.Variable(VarPod, podDecl.CelType()))
	if err != nil {
		return nil, fmt.Errorf("building the hook pods environment: %w", err)
	}
	return e, nil
}

// HookPodsField is the field path of the pods expression of the policy's i-th hook.
func HookPodsField(i int) string { return fmt.Sprintf("spec.hooks[%d].pods", i) }

// ValidateHookPods checks a new or changed pods expression of a hook (over `namespace`
// and `pod`) with the strict environment and the selector's limits, naming field in
// its errors. It returns nil or an ErrorList.
func (e *Engine) ValidateHookPods(field, expr string) error {
	_, err := e.compileExpression(e.podNew, field, expr)
	return err
}

// CompileHookPods compiles a stored pods expression of a hook with the permissive
// environment. An empty expression gives a nil *Expression: use MatchPod, for which
// nil matches every pod.
func (e *Engine) CompileHookPods(field, expr string) (*Expression, error) {
	return e.compileExpression(e.podStored, field, expr)
}

// MatchPod evaluates a hook's pods expression on one pod; a nil Expression (no
// expression) matches every pod. cache may be nil.
func (x *Expression) MatchPod(ns *corev1.Namespace, pod *corev1.Pod, cache *Cache) (bool, error) {
	if x == nil {
		return true, nil
	}
	e := x.engine
	nsVal, err := cache.value(ns, e.nsSchema)
	if err != nil {
		return false, errorf(x.field, ErrorEvaluation, "%v", err)
	}
	podVal, err := cache.value(pod, e.podSchema)
	if err != nil {
		return false, errorf(x.field, ErrorEvaluation, "%v", err)
	}
	return cache.eval(x.prg, x.field, map[string]any{nsIdent: nsVal, VarPod: podVal})
}

func declType(name string, t reflect.Type) (*apiservercel.DeclType, common.Schema) {
	s := newCachedSchema(schemaFor(t))
	return common.SchemaDeclType(s, false).MaybeAssignTypeName(name), s
}

// ErrorList is every problem found in a selector, one per field at most.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Errors returns the *Error values inside err (an ErrorList or a single *Error).
func Errors(err error) []*Error {
	var list ErrorList
	if errors.As(err, &list) {
		return list
	}
	var one *Error
	if errors.As(err, &one) {
		return []*Error{one}
	}
	return nil
}

// Validate checks a new or changed selector with the strict environment, as the
// admission webhook does. It returns nil or an ErrorList.
func (e *Engine) Validate(sel v1.VolumeSelector) error {
	_, err := e.compile(sel, e.nsNew, e.volNew)
	return err
}

// Compile compiles a selector that is already stored, with the permissive
// environment. It returns the selector or an ErrorList.
func (e *Engine) Compile(sel v1.VolumeSelector) (*Selector, error) {
	return e.compile(sel, e.nsStored, e.volStored)
}

// ForPolicy returns the compiled selector of a policy, compiling it only when the
// policy's generation (or selector) changed since the last call.
func (e *Engine) ForPolicy(p *v1.VolumeBackupPolicy) (*Selector, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.cache[p.Name]; ok && c.uid == p.UID && c.generation == p.Generation && c.selector == p.Spec.Selector {
		return c.compiled, c.err
	}
	compiled, err := e.Compile(p.Spec.Selector)
	e.cache[p.Name] = &cacheEntry{uid: p.UID, generation: p.Generation, selector: p.Spec.Selector, compiled: compiled, err: err}
	return compiled, err
}

// Forget drops the cached programs of a deleted policy.
func (e *Engine) Forget(policyName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.cache, policyName)
	delete(e.exclusions, policyName)
}

// Expression is one compiled expression over the volume variables (namespace, pod,
// volume, pvc), such as a policy's coverage exclusion. A nil *Expression matches
// nothing.
type Expression struct {
	engine *Engine
	field  string
	prg    cel.Program
}

// ValidateExclusion checks a new or changed coverage exclusion with the strict
// environment and the same limits as the volume selector. It returns nil or an
// ErrorList.
func (e *Engine) ValidateExclusion(expr string) error {
	_, err := e.compileExpression(e.volNew, FieldCoverageExclude, expr)
	return err
}

// CompileExclusion compiles a stored coverage exclusion with the permissive
// environment. An empty expression gives a nil *Expression, which matches nothing.
func (e *Engine) CompileExclusion(expr string) (*Expression, error) {
	return e.compileExpression(e.volStored, FieldCoverageExclude, expr)
}

// ExclusionForPolicy returns the compiled coverage exclusion of a policy (nil when it
// has none), compiling it only when the policy's generation or expression changed.
func (e *Engine) ExclusionForPolicy(p *v1.VolumeBackupPolicy) (*Expression, error) {
	expr := ""
	if p.Spec.Coverage != nil {
		expr = p.Spec.Coverage.Exclude
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.exclusions[p.Name]; ok && c.uid == p.UID && c.generation == p.Generation && c.expr == expr {
		return c.compiled, c.err
	}
	compiled, err := e.CompileExclusion(expr)
	e.exclusions[p.Name] = &exclusionEntry{uid: p.UID, generation: p.Generation, expr: expr, compiled: compiled, err: err}
	return compiled, err
}

func (e *Engine) compileExpression(env *cel.Env, field, expr string) (*Expression, error) {
	prg, err := e.compileOne(env, e.volSizes, field, expr)
	if err != nil {
		return nil, ErrorList{err}
	}
	if prg == nil {
		return nil, nil
	}
	return &Expression{engine: e, field: field, prg: prg}, nil
}

// Match evaluates the expression on one volume, charging the Cache's budget as
// MatchVolume does. A nil Expression matches nothing.
func (x *Expression) Match(in Volume, cache *Cache) (bool, error) {
	if x == nil {
		return false, nil
	}
	return x.engine.matchVolume(x.prg, x.field, in, cache)
}

func (e *Engine) compile(sel v1.VolumeSelector, nsEnv, volEnv *cel.Env) (*Selector, error) {
	s := &Selector{engine: e}
	var errs ErrorList
	var err *Error
	if s.namespaces, err = e.compileOne(nsEnv, e.nsSizes, FieldNamespaces, sel.Namespaces); err != nil {
		errs = append(errs, err)
	}
	if s.volumes, err = e.compileOne(volEnv, e.volSizes, FieldVolumes, sel.Volumes); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

func (e *Engine) compileOne(env *cel.Env, sizes *sizeEstimator, field, expr string) (cel.Program, *Error) {
	if strings.TrimSpace(expr) == "" {
		return nil, nil // an absent expression is true
	}
	if len(expr) > MaxExpressionLength {
		return nil, errorf(field, ErrorTooLong, "expression is %d characters long, more than the limit of %d", len(expr), MaxExpressionLength)
	}
	ast, issues := env.Compile(renameNamespace(expr))
	if issues != nil && issues.Err() != nil {
		return nil, compileError(field, issues)
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, errorf(field, ErrorInvalid, "expression must return bool, but returns %s", restoreNamespace(ast.OutputType().String()))
	}
	est, err := env.EstimateCost(ast, &library.CostEstimator{SizeEstimator: sizes})
	if err != nil {
		return nil, errorf(field, ErrorInternal, "estimating the cost: %v", err)
	}
	if est.Max > MaxEstimatedCost {
		return nil, errorf(field, ErrorTooCostly,
			"estimated worst-case cost %d exceeds the limit of %d: iterate over fewer items or test a narrower field", est.Max, MaxEstimatedCost)
	}
	prg, err := env.Program(ast, cel.CostLimit(e.runtimeCostLimit))
	if err != nil {
		return nil, errorf(field, ErrorInternal, "building the program: %v", err)
	}
	return prg, nil
}

// Selector is a compiled VolumeSelector.
type Selector struct {
	engine     *Engine
	namespaces cel.Program // nil: true
	volumes    cel.Program // nil: true
}

// MatchNamespace evaluates the namespace expression. cache may be nil.
func (s *Selector) MatchNamespace(ns *corev1.Namespace, cache *Cache) (bool, error) {
	if s.namespaces == nil {
		return true, nil
	}
	nsVal, err := cache.value(ns, s.engine.nsSchema)
	if err != nil {
		return false, errorf(FieldNamespaces, ErrorEvaluation, "%v", err)
	}
	return cache.eval(s.namespaces, FieldNamespaces, map[string]any{nsIdent: nsVal})
}

// Volume is what the volume expression sees. PVC is nil when the volume is not a
// claim (or the claim does not exist).
type Volume struct {
	Namespace *corev1.Namespace
	Pod       *corev1.Pod
	Volume    *corev1.Volume
	PVC       *corev1.PersistentVolumeClaim
}

// MatchVolume evaluates the volume expression. cache may be nil; pass the same one for
// all the volumes of a pass so that each object is converted once.
func (s *Selector) MatchVolume(in Volume, cache *Cache) (bool, error) {
	if s.volumes == nil {
		return true, nil
	}
	return s.engine.matchVolume(s.volumes, FieldVolumes, in, cache)
}

func (e *Engine) matchVolume(prg cel.Program, field string, in Volume, cache *Cache) (bool, error) {
	// Variables are converted lazily: an expression that never reads `pod` does not
	// pay for converting the pod. A conversion failure surfaces as an evaluation error.
	lazy := func(obj any, schema common.Schema) func() ref.Val {
		return func() ref.Val {
			v, err := cache.value(obj, schema)
			if err != nil {
				return types.NewErr("converting the object: %v", err)
			}
			return v
		}
	}
	return cache.eval(prg, field, map[string]any{
		nsIdent:   lazy(in.Namespace, e.nsSchema),
		VarPod:    lazy(in.Pod, e.podSchema),
		VarVolume: lazy(in.Volume, e.volSchema),
		VarPVC:    lazy(in.PVC, e.pvcSchema),
	})
}

// Cache holds the CEL values of the objects seen in one selection pass, so that a
// namespace or pod is converted once and not once per volume. The zero value is ready;
// it is not safe for concurrent use. Objects are keyed by pointer: do not change an
// object while a Cache that saw it is in use.
type Cache struct {
	vals map[any]ref.Val
	// Budget is the cost the evaluations through this Cache may spend together;
	// 0 is PassCostBudget.
	Budget uint64
	spent  uint64
}

// Spent is the cost of the evaluations made through the Cache so far.
func (c *Cache) Spent() uint64 {
	if c == nil {
		return 0
	}
	return c.spent
}

// eval evaluates prg, charging its cost to the Cache's budget; once the budget is
// spent it evaluates nothing more.
func (c *Cache) eval(prg cel.Program, field string, vars map[string]any) (bool, error) {
	if c == nil {
		matched, _, err := eval(prg, field, vars)
		return matched, err
	}
	budget := c.Budget
	if budget == 0 {
		budget = PassCostBudget
	}
	if c.spent >= budget {
		return false, errorf(field, ErrorBudget, "the selection pass spent its cost budget of %d before this evaluation", budget)
	}
	matched, cost, err := eval(prg, field, vars)
	c.spent += cost
	return matched, err
}

func (c *Cache) value(obj any, schema common.Schema) (ref.Val, error) {
	if isNil(obj) {
		return types.NullValue, nil
	}
	if c != nil {
		if v, ok := c.vals[obj]; ok {
			return v, nil
		}
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	emptyMetadataMaps(u)
	v := common.UnstructuredToVal(u, schema)
	if c != nil {
		if c.vals == nil {
			c.vals = map[any]ref.Val{}
		}
		c.vals[obj] = v
	}
	return v, nil
}

// emptyMetadataMaps gives an object without labels or annotations empty maps instead,
// so that pod.metadata.labels[?"app"] and the Velero annotation one-liners read
// "absent" rather than failing with "no such key" on the many objects that have none.
func emptyMetadataMaps(u map[string]any) {
	md, ok := u["metadata"].(map[string]any)
	if !ok {
		return
	}
	for _, key := range []string{"labels", "annotations"} {
		if _, ok := md[key]; !ok {
			md[key] = map[string]any{}
		}
	}
}

func isNil(obj any) bool {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return o == nil
	case *corev1.Pod:
		return o == nil
	case *corev1.Volume:
		return o == nil
	case *corev1.PersistentVolumeClaim:
		return o == nil
	}
	return obj == nil
}

// HasNamespaceExpression reports whether the namespace expression is set.
func (s *Selector) HasNamespaceExpression() bool { return s.namespaces != nil }

func eval(prg cel.Program, field string, vars map[string]any) (matched bool, cost uint64, err error) {
	// The CEL interpreter turns most faults into error values; this guards the rest
	// (a panic in a reflection-based value) so that one odd object cannot take the
	// controller down.
	defer func() {
		if r := recover(); r != nil {
			matched, err = false, errorf(field, ErrorEvaluation, "evaluation panicked: %v", r)
		}
	}()
	out, det, evalErr := prg.Eval(vars)
	if c := det.ActualCost(); c != nil {
		cost = *c
	}
	if evalErr != nil {
		return false, cost, errorf(field, ErrorEvaluation, "%v", evalErr)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, cost, errorf(field, ErrorEvaluation, "expression returned %s, not bool", out.Type())
	}
	return bool(b), cost, nil
}
