package policy

import (
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apiserver/pkg/cel/common"
	"k8s.io/apiserver/pkg/cel/openapi"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Bounds the cost estimator assumes for values whose size the Go type leaves open.
// Kubernetes caps an object at about 1.5 MiB in etcd; these are tighter on purpose, as
// realistic worst cases of a pod, so that an expression iterating over a pod's
// containers or labels is estimated at what it really costs.
const (
	assumedMaxItems      = 256       // containers, volumes, env entries, ...
	assumedMaxProperties = 256       // labels, annotations, ...
	assumedMaxLength     = 64 * 1024 // a map value (an annotation can hold a document)
	assumedMaxField      = 4 * 1024  // any other string: names, images, paths, ...
)

var (
	timeType     = reflect.TypeFor[metav1.Time]()
	microTime    = reflect.TypeFor[metav1.MicroTime]()
	durationType = reflect.TypeFor[metav1.Duration]()
	intOrString  = reflect.TypeFor[intstr.IntOrString]()
	quantityType = reflect.TypeFor[resource.Quantity]()
)

// schemaFor builds the OpenAPI schema of a Kubernetes Go type from its JSON tags, the
// way the API server publishes it: the declared CEL type and the runtime values
// (TypedToVal) are then derived from the same schema and cannot disagree.
func schemaFor(t reflect.Type) *spec.Schema {
	return schemaOf(t, map[reflect.Type]bool{})
}

func schemaOf(t reflect.Type, visiting map[reflect.Type]bool) *spec.Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case timeType, microTime:
		s := withMax(spec.DateTimeProperty())
		s.Nullable = true // a zero time is serialised as null
		return s
	case durationType:
		s := spec.StringProperty()
		s.Format = "duration"
		return s
	case intOrString:
		s := &spec.Schema{}
		s.AddExtension("x-kubernetes-int-or-string", true)
		s.MaxLength = ptr(int64(64))
		return s
	case quantityType:
		s := spec.StringProperty()
		s.MaxLength = ptr(int64(64))
		return s
	}
	switch t.Kind() {
	case reflect.String:
		s := spec.StringProperty()
		s.MaxLength = ptr(int64(assumedMaxField))
		return s
	case reflect.Bool:
		return spec.BoolProperty()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return spec.Int64Property()
	case reflect.Float32, reflect.Float64:
		return spec.Float64Property()
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			s := spec.StringProperty()
			s.Format = "byte"
			s.MaxLength = ptr(int64(assumedMaxLength))
			return s
		}
		s := spec.ArrayProperty(schemaOf(t.Elem(), visiting))
		s.MaxItems = ptr(int64(assumedMaxItems))
		return s
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			panic(fmt.Sprintf("policy: map key %v of %v has no JSON form", t.Key(), t))
		}
		elem := schemaOf(t.Elem(), visiting)
		if elem.Type.Contains("string") && elem.Format == "" {
			elem.MaxLength = ptr(int64(assumedMaxLength))
		}
		s := spec.MapProperty(elem)
		s.MaxProperties = ptr(int64(assumedMaxProperties))
		return s
	case reflect.Struct:
		if visiting[t] {
			panic(fmt.Sprintf("policy: recursive type %v cannot be declared to CEL", t))
		}
		visiting[t] = true
		defer delete(visiting, t)
		s := &spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}, Properties: map[string]spec.Schema{}}}
		addFields(s, t, visiting)
		return s
	}
	panic(fmt.Sprintf("policy: Go kind %v of %v has no CEL type", t.Kind(), t))
}

func addFields(s *spec.Schema, t reflect.Type, visiting map[reflect.Type]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			addFields(s, ft, visiting)
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.Properties[name] = *schemaOf(f.Type, visiting)
	}
}

func withMax(s *spec.Schema) *spec.Schema {
	s.MaxLength = ptr(int64(assumedMaxLength))
	return s
}

func ptr[T any](v T) *T { return &v }

// cachedSchema is the API server's OpenAPI adaptor with its children computed once.
// The plain adaptor builds a new map of every property on each field access, which made
// reading pod.spec.volumes cost more than the rest of an evaluation together.
type cachedSchema struct {
	*openapi.Schema
	props map[string]common.Schema
	items common.Schema
	extra common.SchemaOrBool
}

func newCachedSchema(s *spec.Schema) *cachedSchema {
	c := &cachedSchema{Schema: &openapi.Schema{Schema: s}}
	if len(s.Properties) > 0 {
		c.props = make(map[string]common.Schema, len(s.Properties))
		for name, p := range s.Properties {
			c.props[name] = newCachedSchema(&p)
		}
	}
	if s.Items != nil && s.Items.Schema != nil {
		c.items = newCachedSchema(s.Items.Schema)
	}
	if s.AdditionalProperties != nil {
		extra := &cachedSchemaOrBool{allows: s.AdditionalProperties.Allows}
		if s.AdditionalProperties.Schema != nil {
			extra.schema = newCachedSchema(s.AdditionalProperties.Schema)
		}
		c.extra = extra
	}
	return c
}

func (c *cachedSchema) Properties() map[string]common.Schema { return c.props }

func (c *cachedSchema) Items() common.Schema {
	if c.items == nil {
		return nil // a typed nil would look like a schema
	}
	return c.items
}

func (c *cachedSchema) AdditionalProperties() common.SchemaOrBool {
	if c.extra == nil {
		return nil
	}
	return c.extra
}

type cachedSchemaOrBool struct {
	schema *cachedSchema
	allows bool
}

func (s *cachedSchemaOrBool) Schema() common.Schema {
	if s.schema == nil {
		return nil
	}
	return s.schema
}

func (s *cachedSchemaOrBool) Allows() bool { return s.allows }
