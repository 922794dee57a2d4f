package tpm

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
)

func TestNewChecksItsConfig(t *testing.T) {
	ok := Config{ServiceURL: "https://attest.example:8443", ServiceCAs: x509.NewCertPool(), NodeName: "node-a"}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"complete", func(*Config) {}, true},
		{"no service CA", func(c *Config) { c.ServiceCAs = nil }, false},
		{"the service CA pinned by hash", func(c *Config) { c.ServiceCAs, c.ServiceCAHash = nil, "sha256:"+strings.Repeat("ab", 32) }, true},
		{"a malformed hash", func(c *Config) { c.ServiceCAs, c.ServiceCAHash = nil, "sha256:abc" }, false},
		{"plain http", func(c *Config) { c.ServiceURL = "http://attest.example" }, false},
		{"no host", func(c *Config) { c.ServiceURL = "https://" }, false},
		{"no node name", func(c *Config) { c.NodeName = "" }, false},
		{"upper-case node name", func(c *Config) { c.NodeName = "Node-A" }, false},
		{"negative timeout", func(c *Config) { c.CallTimeout = -time.Second }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			if _, err := New(cfg); (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%t", err, tc.ok)
			}
		})
	}
}

// service answers every call with status and body.
func service(t *testing.T, status int, body string) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	cas := x509.NewCertPool()
	cas.AddCert(srv.Certificate())
	return srv, cas
}

func TestClientCalls(t *testing.T) {
	refusal, _ := json.Marshal(attestation.Error{Reason: attestation.ReasonUnknownEK, Message: "no node is enrolled"})
	shortNonce, _ := json.Marshal(attestation.BeginResponse{SessionID: strings.Repeat("a", 32), Credential: []byte{1}, EncryptedSecret: []byte{1}, Nonce: make([]byte, 16), Expires: time.Now()})
	good, _ := json.Marshal(attestation.BeginResponse{SessionID: strings.Repeat("a", 32), Credential: []byte{1}, EncryptedSecret: []byte{1}, Nonce: make([]byte, 32), Expires: time.Now()})
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		trusted    bool
		ok         bool
		wantReason attestation.Reason
	}{
		{"a challenge", 200, string(good), true, true, ""},
		{"a refusal", 403, string(refusal), true, false, attestation.ReasonUnknownEK},
		{"a proxy's error page", 502, "<html>bad gateway</html>", true, false, ""},
		{"a nonce too short", 200, string(shortNonce), true, false, ""},
		{"not JSON", 200, "hello", true, false, ""},
		{"too large", 200, strings.Repeat(" ", attestation.MaxBodyBytes+1), true, false, ""},
		{"a service the user-data's CA did not sign", 200, string(good), false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cas := service(t, tc.status, tc.body)
			if !tc.trusted {
				cas = x509.NewCertPool()
			}
			c, err := newServiceClient(srv.URL, cas, "", 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.begin(context.Background(), &attestation.BeginRequest{})
			if (err == nil) != tc.ok {
				t.Fatalf("begin: %v, want ok=%t", err, tc.ok)
			}
			r, isRefusal := Refusal(err)
			if tc.wantReason != "" && (!isRefusal || r.Reason != tc.wantReason) {
				t.Fatalf("got %v, want the refusal %s", err, tc.wantReason)
			}
			if tc.wantReason == "" && isRefusal {
				t.Fatalf("%v taken for a refusal of the service", err)
			}
		})
	}
}
