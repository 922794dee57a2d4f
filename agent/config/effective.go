package config

import "encoding/json"

// Origins of values that come from neither a file nor a flag.
const (
	OriginDefault  = "default"
	OriginHostName = "host name"
)

// Entry is one setting of the effective configuration.
type Entry struct {
	Key    string          `json:"-"`
	Value  json.RawMessage `json:"value"`
	Origin string          `json:"origin"`
}

// effective lists every setting of cfg in docs/config.md's order, each with
// its origin: origin's entry for its key (a file, a flag, the host name),
// else the default.
func Effective(cfg Config, origin map[string]string) []Entry {
	out := make([]Entry, 0, len(settings))
	for _, s := range settings {
		o := origin[s.key]
		if o == "" {
			o = OriginDefault
		}
		out = append(out, Entry{Key: s.key, Value: s.value(cfg), Origin: o})
	}
	return out
}
