package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const fileHeader = "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"

// writeConfigFile writes body, after the header, to a config file and
// returns its path.
func writeConfigFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(fileHeader+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKeysSetFollowsTheDecoder: a key set to null counts as set exactly
// when decoding the null changes the value (a list, a pointer, a duration),
// so that the origin never names a file that changed nothing.
func TestKeysSetFollowsTheDecoder(t *testing.T) {
	base, err := Load(writeConfigFile(t, `nodeName: node-x
bootstrapKubeconfig: /b
kubeconfig: /k
certDir: /c
issuerCAFile: /ca
allowInsecureBootstrap: true
timeout: 1m
logLevel: debug
serving: {enabled: false, dnsNames: [a], ipAddresses: [10.0.0.1]}
rotation: {requestedDuration: 24h, renewBefore: 1h}
hooks: {postRenew: [{command: [x]}], postTrust: [{command: [z]}]}
metrics: {address: ":1"}
trust: {follow: true, caFile: /t, kubeletClientCAFile: /kc, kubeletClientCASigner: example.com/s, reissueSpread: 1m}
`), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		t.Run(s.key, func(t *testing.T) {
			doc := s.key + ": null\n"
			if section, name, ok := strings.Cut(s.key, "."); ok {
				doc = section + ": {" + name + ": null}\n"
			}
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(fileHeader+doc), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := base
			keys, err := decodeInto(p, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			changed := !reflect.DeepEqual(reflect.ValueOf(cfg).FieldByIndex(s.index).Interface(), reflect.ValueOf(base).FieldByIndex(s.index).Interface())
			if set := slices.Contains(keys, s.key); set != changed {
				t.Fatalf("null: keysSet says set=%v, the decoder changed=%v", set, changed)
			}
		})
	}
}
