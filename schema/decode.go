package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"cuelang.org/go/cue"
)

var (
	portRefType = reflect.TypeFor[PortRef]()
	anyMapType  = reflect.TypeFor[map[string]any]()
)

// decodeValue fills rv, one of this package's Go types, from the CUE value
// v by looking up each field by its json name. It exists because
// cue.Value.MarshalJSON and Decode sort every struct's fields
// topologically, which was a third of the time of vetting 1000 CTXs; Load
// sorts entries itself and CBOR sorts map keys, so the order is not needed.
// Lists and maps decode to empty, never nil, values, so that the CBOR of a
// CTX does not depend on how it was decoded.
func decodeValue(v cue.Value, rv reflect.Value, path string) error {
	switch rv.Kind() {
	case reflect.String, reflect.Int, reflect.Int64, reflect.Bool:
		// The scalar accessors resolve defaults themselves; every
		// cue.Value call costs an evaluation context, so skip Default.
	default:
		v, _ = v.Default()
	}
	switch {
	case rv.Type() == portRefType:
		var p PortRef
		switch v.Kind() {
		case cue.IntKind:
			n, err := v.Int64()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			p.Number = int(n)
		case cue.StringKind:
			s, err := v.String()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			p.Name = s
		default:
			return fmt.Errorf("%s: want a port number or name, have %v", path, v.Kind())
		}
		rv.Set(reflect.ValueOf(p))
		return nil
	case rv.Type() == anyMapType:
		// Driver params have no Go type here: go through JSON and keep
		// whole numbers integers.
		b, err := v.MarshalJSON()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rv.Set(reflect.ValueOf(normalizeNumbers(m)))
		return nil
	}
	switch rv.Kind() {
	case reflect.String:
		s, err := v.String()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rv.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := v.Int64()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rv.SetInt(n)
	case reflect.Bool:
		b, err := v.Bool()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rv.SetBool(b)
	case reflect.Slice:
		it, err := v.List()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		s := reflect.MakeSlice(rv.Type(), 0, 0)
		for i := 0; it.Next(); i++ {
			e := reflect.New(rv.Type().Elem()).Elem()
			if err := decodeValue(it.Value(), e, fmt.Sprintf("%s.%d", path, i)); err != nil {
				return err
			}
			s = reflect.Append(s, e)
		}
		rv.Set(s)
	case reflect.Map:
		it, err := v.Fields()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		m := reflect.MakeMap(rv.Type())
		for it.Next() {
			key := it.Selector().Unquoted()
			e := reflect.New(rv.Type().Elem()).Elem()
			if err := decodeValue(it.Value(), e, path+"."+key); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key), e)
		}
		rv.Set(m)
	case reflect.Pointer:
		p := reflect.New(rv.Type().Elem())
		if err := decodeValue(v, p.Elem(), path); err != nil {
			return err
		}
		rv.Set(p)
	case reflect.Struct:
		t := rv.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			f := v.LookupPath(cue.MakePath(cue.Str(name)))
			if !f.Exists() {
				continue // an optional field left out
			}
			if err := decodeValue(f, rv.Field(i), joinPath(path, name)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s: cannot decode into %v", path, rv.Type())
	}
	return nil
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
