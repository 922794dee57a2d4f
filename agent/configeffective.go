package agent

import "encoding/json"

// Origins of values that come from neither a file nor a flag.
const (
	originDefault  = "default"
	originHostName = "host name"
)

// configEntry is one setting of the effective configuration.
type configEntry struct {
	Key    string          `json:"-"`
	Value  json.RawMessage `json:"value"`
	Origin string          `json:"origin"`
}

// effective lists every setting of cfg in docs/config.md's order, each with
// its origin: origin's entry for its key (a file, a flag, the host name),
// else the default.
func effective(cfg Config, origin map[string]string) []configEntry {
	out := make([]configEntry, 0, len(configSettings))
	for _, s := range configSettings {
		o := origin[s.key]
		if o == "" {
			o = originDefault
		}
		out = append(out, configEntry{Key: s.key, Value: s.value(cfg), Origin: o})
	}
	return out
}
