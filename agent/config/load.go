package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	sigsjson "sigs.k8s.io/json"

	"sigs.k8s.io/yaml"
)

// Load reads path over the defaults, then every drop-in
// <dir of path>/config.d/*.yaml in name order. If path is the default path
// and does not exist, the defaults (and drop-ins) apply; any other missing
// file is an error. Unknown keys are errors that name the key.
func Load(path string, explicit bool) (Config, error) {
	cfg, _, err := LoadFiles(path, explicit)
	return cfg, err
}

// File is a file Load applied and the settings it set, as
// dotted keys (serving.dnsNames) in the order of the settings list.
type File struct {
	Path string
	Keys []string
}

// LoadFiles is Load, also saying which files it applied, in
// order, and what each set (certagent config shows where values come from).
func LoadFiles(path string, explicit bool) (Config, []File, error) {
	cfg := Default()
	files := []string{}
	if _, err := os.Stat(path); err == nil || explicit {
		files = append(files, path)
	}
	dropIns, err := filepath.Glob(filepath.Join(filepath.Dir(path), "config.d", "*.yaml"))
	if err != nil {
		return cfg, nil, fmt.Errorf("listing config drop-ins: %w", err)
	}
	sort.Strings(dropIns)
	var read []File
	for _, f := range append(files, dropIns...) {
		keys, err := decodeInto(f, &cfg)
		if err != nil {
			return cfg, read, err
		}
		read = append(read, File{Path: f, Keys: keys})
	}
	return cfg, read, nil
}

// decodeInto applies one file over cfg and returns the settings it set.
func decodeInto(path string, cfg *Config) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	// Each file must say what it is: clear apiVersion and kind first.
	cfg.APIVersion, cfg.Kind = "", ""
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("config %s is not valid YAML: %w", path, err)
	}
	strict, err := sigsjson.UnmarshalStrict(js, cfg, sigsjson.DisallowUnknownFields)
	if err != nil {
		if key := badDurationKey(js); key != "" {
			return nil, fmt.Errorf("config %s: %s: %s", path, key, cleanJSONError(err))
		}
		return nil, fmt.Errorf("config %s: %s", path, cleanJSONError(err))
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = cleanJSONError(e)
		}
		return nil, fmt.Errorf("config %s: %s", path, strings.Join(msgs, "; "))
	}
	if cfg.APIVersion != APIVersion || cfg.Kind != Kind {
		return nil, fmt.Errorf("config %s: apiVersion/kind are %q/%q, want %q/%q", path, cfg.APIVersion, cfg.Kind, APIVersion, Kind)
	}
	return keysSet(js), nil
}

// hookTimeouts is a hook list as badDurationKey reads it.
type hookTimeouts []struct {
	Timeout any `json:"timeout"`
}

// badDurationKey names the first duration setting in js that does not parse,
// so that a bad value is reported with its key (the decoder does not say).
func badDurationKey(js []byte) string {
	var doc struct {
		Timeout  any `json:"timeout"`
		Rotation struct {
			RequestedDuration any `json:"requestedDuration"`
			RenewBefore       any `json:"renewBefore"`
		} `json:"rotation"`
		Hooks struct {
			PostRenew hookTimeouts `json:"postRenew"`
			PostTrust hookTimeouts `json:"postTrust"`
		} `json:"hooks"`
	}
	if json.Unmarshal(js, &doc) != nil {
		return ""
	}
	bad := func(v any) bool {
		if v == nil {
			return false
		}
		var d Duration
		b, _ := json.Marshal(v)
		return d.UnmarshalJSON(b) != nil
	}
	switch {
	case bad(doc.Timeout):
		return "timeout"
	case bad(doc.Rotation.RequestedDuration):
		return "rotation.requestedDuration"
	case bad(doc.Rotation.RenewBefore):
		return "rotation.renewBefore"
	}
	for _, list := range []struct {
		key   string
		hooks hookTimeouts
	}{{"hooks.postRenew", doc.Hooks.PostRenew}, {"hooks.postTrust", doc.Hooks.PostTrust}} {
		for i, h := range list.hooks {
			if bad(h.Timeout) {
				return fmt.Sprintf("%s[%d].timeout", list.key, i)
			}
		}
	}
	return ""
}

// cleanJSONError drops the decoder's "json: " prefix; the message keeps the
// key's full path (unknown field "serving.dnsName").
func cleanJSONError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}
