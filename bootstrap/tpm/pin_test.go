package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
)

// pinnedService is a service whose certificate is issued by a CA of its own
// and sent with that CA after it (as init-tls writes it) when withCA.
func pinnedService(t *testing.T, withCA bool) (*httptest.Server, *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "service CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{leafDER}
	if withCA {
		chain = append(chain, caDER)
	}
	good, _ := json.Marshal(attestation.BeginResponse{SessionID: strings.Repeat("a", 32), Credential: []byte{1}, EncryptedSecret: []byte{1}, Nonce: make([]byte, 32), Expires: time.Now()})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(good) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ca
}

// TestServiceCAPinnedByHash: a node whose user-data carries only the
// service CA's hash talks to the service whose certificate chains to the CA
// with that hash, sent in the handshake, and to no other.
func TestServiceCAPinnedByHash(t *testing.T) {
	for _, tc := range []struct {
		name   string
		withCA bool
		hash   func(ca *x509.Certificate) string
		ok     bool
	}{
		{"the pinned CA", true, attestation.ServiceCAHash, true},
		{"another CA's hash", true, func(*x509.Certificate) string { return "sha256:" + strings.Repeat("0", 64) }, false},
		{"the CA not sent", false, attestation.ServiceCAHash, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, ca := pinnedService(t, tc.withCA)
			c, err := newServiceClient(srv.URL, nil, tc.hash(ca), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.begin(context.Background(), &attestation.BeginRequest{})
			if (err == nil) != tc.ok {
				t.Fatalf("begin: %v, want ok=%t", err, tc.ok)
			}
		})
	}
}
