package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// setting is one configuration setting: its dotted key as docs/config.md
// writes it (timeout, serving.dnsNames) and its field in Config.
type setting struct {
	key   string
	index []int
	typ   reflect.Type
}

// settings lists every setting in Config's declaration order, which
// is docs/config.md's order: the top-level fields, and one level into the
// sections (serving.enabled, metrics.address). apiVersion and kind say what a
// file is; they are not settings.
var settings = settingsOf(reflect.TypeFor[Config]())

func settingsOf(t reflect.Type) []setting {
	var out []setting
	for i := range t.NumField() {
		f := t.Field(i)
		name := jsonName(f)
		if name == "apiVersion" || name == "kind" {
			continue
		}
		if f.Type.Kind() != reflect.Struct || f.Type == reflect.TypeFor[Duration]() {
			out = append(out, setting{key: name, index: []int{i}, typ: f.Type})
			continue
		}
		for j := range f.Type.NumField() {
			g := f.Type.Field(j)
			out = append(out, setting{key: name + "." + jsonName(g), index: []int{i, j}, typ: g.Type})
		}
	}
	return out
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// keysSet lists the settings that the JSON form of a config file sets, in
// settings order. js has been decoded strictly already, so every key
// in it is a known one. A null sets a list, a pointer or a duration (to
// empty) and leaves a string or a bool as it was, as the decoder does.
func keysSet(js []byte) []string {
	var top map[string]json.RawMessage
	if json.Unmarshal(js, &top) != nil {
		return nil
	}
	var out []string
	for _, s := range settings {
		section, name, nested := strings.Cut(s.key, ".")
		raw, ok := top[section]
		if ok && nested {
			var sub map[string]json.RawMessage
			_ = json.Unmarshal(raw, &sub) // a null section sets nothing
			raw, ok = sub[name]
		}
		if !ok || strings.TrimSpace(string(raw)) == "null" && !nullSets(s.typ) {
			continue
		}
		out = append(out, s.key)
	}
	return out
}

// nullSets reports whether decoding a JSON null changes a field of type t.
func nullSets(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
		return true
	}
	return reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]())
}

// value is the setting's value in cfg as JSON; an empty list is [] rather
// than null.
func (s setting) value(cfg Config) json.RawMessage {
	v := reflect.ValueOf(cfg).FieldByIndex(s.index)
	if v.Kind() == reflect.Slice && v.Len() == 0 {
		return json.RawMessage("[]")
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		panic(fmt.Sprintf("encoding the setting %s: %v", s.key, err)) // plain data: cannot fail
	}
	return b
}
