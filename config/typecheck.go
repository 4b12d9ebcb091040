package config

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var (
	durationType    = reflect.TypeFor[metav1.Duration]()
	intOrStringType = reflect.TypeFor[intstr.IntOrString]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// typeCheck compares the decoded JSON of a configuration file with the
// types its fields have and names each mismatch by its path in the file
// (map keys included) and in the file's words: "a whole number", "a list",
// "a duration such as 30s". The decoder's own errors name Go types and
// lose map keys. Unknown fields are left to the strict decoder, which
// names them by path already.
func typeCheck(value any, t reflect.Type, path *field.Path) field.ErrorList {
	if value == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case durationType:
		s, ok := value.(string)
		if !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "a duration such as 30s, 5m or 1h"))}
		}
		if _, err := time.ParseDuration(s); err != nil {
			return field.ErrorList{field.Invalid(path, s, "not a duration: use a number and a unit (ns, us, ms, s, m, h), such as 30s, 5m or 1h30m")}
		}
		return nil
	case intOrStringType:
		if _, ok := value.(string); ok {
			return nil
		}
		if n, ok := value.(float64); ok && n == float64(int32(n)) {
			return nil
		}
		return field.ErrorList{field.Invalid(path, value, want(value, "a whole number or a percentage such as 25%"))}
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil // decodes itself (resource.Quantity, metav1.Time): the decoder says
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := value.(map[string]any)
		if !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "an object (key: value)"))}
		}
		var errs field.ErrorList
		for f := range fields(t) {
			if v, ok := m[f.name]; ok {
				errs = append(errs, typeCheck(v, f.typ, path.Child(f.name))...)
			}
		}
		return errs
	case reflect.Map:
		m, ok := value.(map[string]any)
		if !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "an object (key: value)"))}
		}
		var errs field.ErrorList
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			errs = append(errs, typeCheck(m[k], t.Elem(), path.Key(k))...)
		}
		return errs
	case reflect.Slice:
		l, ok := value.([]any)
		if !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "a list"))}
		}
		var errs field.ErrorList
		for i, v := range l {
			errs = append(errs, typeCheck(v, t.Elem(), path.Index(i))...)
		}
		return errs
	case reflect.String:
		if _, ok := value.(string); !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "a string"))}
		}
	case reflect.Bool:
		if _, ok := value.(bool); !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "true or false"))}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := value.(float64)
		if !ok || n != math.Trunc(n) {
			return field.ErrorList{field.Invalid(path, value, want(value, "a whole number"))}
		}
		if math.Abs(n) >= 1<<63 {
			return field.ErrorList{field.Invalid(path, value, "out of range")}
		}
		v := reflect.New(t).Elem()
		unsigned := t.Kind() >= reflect.Uint
		if unsigned && (n < 0 || v.OverflowUint(uint64(n))) || !unsigned && v.OverflowInt(int64(n)) {
			return field.ErrorList{field.Invalid(path, value, "out of range")}
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := value.(float64); !ok {
			return field.ErrorList{field.Invalid(path, value, want(value, "a number"))}
		}
	}
	return nil
}

// want says what a field takes and what it got instead.
func want(got any, wanted string) string {
	kind := "a string"
	switch got.(type) {
	case map[string]any:
		kind = "an object"
	case []any:
		kind = "a list"
	case bool:
		kind = "true or false"
	case float64:
		kind = "a number"
	}
	return fmt.Sprintf("want %s, got %s", wanted, kind)
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// fields yields a struct's JSON fields by their names in a file, the
// fields of inlined and embedded structs included.
func fields(t reflect.Type) func(func(jsonField) bool) {
	return func(yield func(jsonField) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			if (f.Anonymous && name == "") || strings.Contains(","+opts+",", ",inline,") {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					for sub := range fields(ft) {
						if !yield(sub) {
							return
						}
					}
					continue
				}
			}
			if name == "" {
				name = f.Name
			}
			if !yield(jsonField{name: name, typ: f.Type}) {
				return
			}
		}
	}
}
