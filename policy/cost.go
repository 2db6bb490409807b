package policy

import (
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	apiservercel "k8s.io/apiserver/pkg/cel"
)

// sizeEstimator tells the CEL cost estimator how big a declared value can be, from the
// bounds the schema carries (see schema.go). Without it every list and string would be
// unbounded and every iteration infinitely costly.
type sizeEstimator struct {
	roots map[string]*apiservercel.DeclType
}

func (s *sizeEstimator) EstimateSize(element checker.AstNode) *checker.SizeEstimate {
	if est := s.fromPath(element.Path()); est != nil {
		return est
	}
	// A value computed from the variables (an optional's orValue, a split, a
	// concatenation) has no path; bound it by the largest value of its kind.
	switch element.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: assumedMaxLength}
	case types.ListKind:
		// a split of the largest string into one-character items
		return &checker.SizeEstimate{Min: 0, Max: assumedMaxLength}
	case types.MapKind:
		return &checker.SizeEstimate{Min: 0, Max: assumedMaxProperties}
	}
	return nil
}

func (s *sizeEstimator) fromPath(path []string) *checker.SizeEstimate {
	if len(path) == 0 {
		return nil
	}
	node, ok := s.roots[path[0]]
	if !ok {
		return nil
	}
	for _, name := range path[1:] {
		switch name {
		case "@items", "@values":
			node = node.ElemType
		case "@keys":
			// Map keys are label and annotation keys: at most 253+1+63 characters.
			if node.KeyType == nil {
				return nil
			}
			return &checker.SizeEstimate{Min: 0, Max: 317}
		default:
			f, ok := node.Fields[name]
			if !ok {
				return nil
			}
			node = f.Type
		}
		if node == nil {
			return nil
		}
	}
	return &checker.SizeEstimate{Min: 0, Max: uint64(node.MaxElements)}
}

func (s *sizeEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}
