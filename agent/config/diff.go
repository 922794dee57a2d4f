package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
)

// ChangedKeys lists the settings (as dotted paths, at most two levels deep)
// whose values differ between a and b.
func ChangedKeys(a, b Config) []string {
	fa, fb := flatten(a), flatten(b)
	var out []string
	for k, va := range fa {
		if vb, ok := fb[k]; !ok || !reflect.DeepEqual(va, vb) {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func flatten(c Config) map[string]any {
	data, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("encoding the configuration: %v", err)) // plain data: cannot fail
	}
	var top map[string]any
	_ = json.Unmarshal(data, &top)
	out := map[string]any{}
	for k, v := range top {
		if m, ok := v.(map[string]any); ok {
			for k2, v2 := range m {
				out[k+"."+k2] = v2
			}
			continue
		}
		out[k] = v
	}
	return out
}
