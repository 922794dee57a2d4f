package config

import (
	"strings"
	"testing"
)

// TestAttestationConfigValidates: attestation is off by default, and when on
// it needs the service (https), exactly one way to trust it, the API server
// and the cluster CA; each mistake is named.
func TestAttestationConfigValidates(t *testing.T) {
	good := AttestationConfig{ServiceURL: "https://10.0.0.10:31443", ServiceCAHash: "sha256:" + strings.Repeat("ab", 32),
		Server: "https://10.0.0.1:6443", CertificateAuthority: "/etc/kubernetes/pki/ca.crt"}
	for _, tc := range []struct {
		name   string
		change func(*AttestationConfig)
		want   string // "" valid
	}{
		{"off", func(a *AttestationConfig) { *a = AttestationConfig{} }, ""},
		{"pinned by hash", func(*AttestationConfig) {}, ""},
		{"a CA file", func(a *AttestationConfig) { a.ServiceCAHash, a.ServiceCAFile = "", "/etc/certagent/attestation-ca.crt" }, ""},
		{"after the token", func(a *AttestationConfig) { a.Order = OrderAfterToken }, ""},
		{"half configured", func(a *AttestationConfig) { a.ServiceURL = "" }, "without attestation.serviceURL"},
		{"plain http", func(a *AttestationConfig) { a.ServiceURL = "http://10.0.0.10:31443" }, "must be https://"},
		{"no way to trust the service", func(a *AttestationConfig) { a.ServiceCAHash = "" }, "exactly one of serviceCAFile"},
		{"both ways", func(a *AttestationConfig) { a.ServiceCAFile = "/ca.crt" }, "exactly one of serviceCAFile"},
		{"a bad hash", func(a *AttestationConfig) { a.ServiceCAHash = "sha256:abc" }, "not sha256:<64 hex digits>"},
		{"no API server", func(a *AttestationConfig) { a.Server = "" }, "attestation.server"},
		{"no cluster CA", func(a *AttestationConfig) { a.CertificateAuthority = "" }, "attestation.certificateAuthority is empty"},
		{"an unknown order", func(a *AttestationConfig) { a.Order = "first" }, `attestation.order "first"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			tc.change(&a)
			err := a.validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("validate = %v, want %q", err, tc.want)
			}
		})
	}
}
