package bootstrap

import (
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestVerifyIssued(t *testing.T) {
	ca := newTestCA(t, "cluster-ca")
	other := newTestCA(t, "other-ca")
	key := newKey(t)
	client := Request{Kind: Client, NodeName: "node-a"}
	serving := Request{Kind: Serving, NodeName: "node-a", DNSNames: []string{"node-a"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.7")}}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		chain   func() []byte
		req     Request
		wantErr string
	}{
		{"client ok", func() []byte { return ca.issue(t, key.Public(), client, nil) }, client, ""},
		{"serving ok", func() []byte { return ca.issue(t, key.Public(), serving, nil) }, serving, ""},
		{"another key", func() []byte { return ca.issue(t, newKey(t).Public(), client, nil) }, client, "does not match our private key"},
		{"another node", func() []byte {
			return ca.issue(t, key.Public(), Request{Kind: Client, NodeName: "node-b"}, nil)
		}, client, `issued certificate is for "CN=system:node:node-b,O=system:nodes", want CN=system:node:node-a,O=system:nodes`},
		{"missing usage", func() []byte {
			return ca.issue(t, key.Public(), client, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
		}, client, "lacks the client auth extended key usage"},
		{"missing SAN", func() []byte {
			return ca.issue(t, key.Public(), serving, func(c *x509.Certificate) { c.IPAddresses = nil })
		}, serving, "lacks the requested IP address 10.0.0.7"},
		{"not yet valid beyond skew", func() []byte {
			return ca.issue(t, key.Public(), client, func(c *x509.Certificate) { c.NotBefore = now.Add(10 * time.Minute) })
		}, client, "more than the 2m0s clock skew tolerated"},
		{"not yet valid within skew", func() []byte {
			return ca.issue(t, key.Public(), client, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Minute) })
		}, client, ""},
		{"expired", func() []byte {
			return ca.issue(t, key.Public(), client, func(c *x509.Certificate) { c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour) })
		}, client, "issued certificate expired at"},
		{"wrong CA", func() []byte { return other.issue(t, key.Public(), client, nil) }, client, `does not chain to the expected CA (issuer "CN=other-ca")`},
		{"garbage", func() []byte { return []byte("not pem") }, client, "no PEM certificate found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyIssued(tc.chain(), key, tc.req, VerifyOptions{Roots: ca.pool(), Now: now, Skew: 2 * time.Minute})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestVerifyExpiredIsTyped(t *testing.T) {
	ca := newTestCA(t, "ca")
	key := newKey(t)
	req := Request{Kind: Client, NodeName: "n"}
	chain := ca.issue(t, key.Public(), req, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	_, err := VerifyIssued(chain, key, req, VerifyOptions{Roots: ca.pool(), Now: time.Now()})
	if !errors.Is(err, ErrIssuedExpired) {
		t.Fatalf("error = %v, want ErrIssuedExpired", err)
	}
}
