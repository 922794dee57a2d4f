package bootstrap

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fuzz fixtures are fixed: keys are derived from labels and times are
// constants, so the certificates in testdata/fuzz/FuzzCertificateBundle keep
// matching the key and chaining to the CA on every run.
var (
	fuzzNow      = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzClient   = Request{Kind: Client, NodeName: "node-a"}
	fuzzServing  = Request{Kind: Serving, NodeName: "node-a", DNSNames: []string{"node-a"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.7")}}
	fuzzVerifyAt = VerifyOptions{Now: fuzzNow, Skew: 2 * time.Minute}
)

// fuzzKey derives a fixed P-256 key from label.
func fuzzKey(tb testing.TB, label string) *ecdsa.PrivateKey {
	tb.Helper()
	d := sha256.Sum256([]byte("certagent fuzz " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// fuzzCA is the fixed CA (key "ca", valid 2020–2040) the fuzz targets trust.
func fuzzCA(tb testing.TB) *testCA { return fuzzCAWithKey(tb, "ca") }

// fuzzCAWithKey makes a CA with fuzzCA's name and validity but the key of label.
func fuzzCAWithKey(tb testing.TB, label string) *testCA {
	tb.Helper()
	key := fuzzKey(tb, label)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certagent-fuzz-ca"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{cert: c, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// fuzzIssue signs pub for req with ca, valid 2025–2035 unless notAfter is set.
func fuzzIssue(tb testing.TB, ca *testCA, pub crypto.PublicKey, req Request, notAfter time.Time) []byte {
	tb.Helper()
	if notAfter.IsZero() {
		notAfter = time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: req.Subject(),
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{req.Kind.ExtKeyUsage()},
		DNSNames: req.DNSNames, IPAddresses: req.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func fuzzKeyPEM(tb testing.TB, k *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// FuzzCertificateBundle feeds arbitrary bytes to ParseCertificates, LoadPair
// (as a file) and VerifyIssued (fixed key "leaf", fixed CA, fixed now, client
// and serving requests). None may panic; ParseCertificates returns certificates
// exactly when it returns no error; a pair that loads has a leaf matching its
// private key; a load error names the file; and VerifyIssued accepts only a
// chain whose first certificate is for the fixed key, for node-a, valid now
// and signed by the fixed CA.
func FuzzCertificateBundle(f *testing.F) {
	ca, key := fuzzCA(f), fuzzKey(f, "leaf")
	for _, s := range fuzzBundleSeeds(f, ca, key) {
		f.Add(s)
	}
	opts := fuzzVerifyAt
	opts.Roots = ca.pool()
	dir := f.TempDir() // one directory per worker process; calls are sequential
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if (err == nil) != (len(certs) > 0) {
			t.Fatalf("ParseCertificates = %d certificates, error %v", len(certs), err)
		}

		p := filepath.Join(dir, "bundle.pem")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if pair, err := LoadPair(p); err != nil {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("LoadPair error does not name the file %s: %v", p, err)
			}
		} else if s, ok := pair.PrivateKey.(crypto.Signer); !ok || pair.Leaf == nil || !publicKeysEqual(pair.Leaf.PublicKey, s.Public()) {
			t.Errorf("LoadPair accepted a leaf that does not match its key: %T", pair.PrivateKey)
		}

		for _, req := range []Request{fuzzClient, fuzzServing} {
			leaf, err := VerifyIssued(data, key, req, opts)
			if err != nil {
				if leaf != nil {
					t.Errorf("VerifyIssued(%s) returned a leaf with error %v", req.Kind, err)
				}
				continue
			}
			switch {
			case leaf == nil || len(certs) == 0 || !leaf.Equal(certs[0]):
				t.Fatalf("VerifyIssued(%s) accepted, but its leaf is not the first certificate", req.Kind)
			case !publicKeysEqual(leaf.PublicKey, key.Public()):
				t.Fatalf("VerifyIssued(%s) accepted a certificate for another key", req.Kind)
			case leaf.Subject.CommonName != "system:node:node-a":
				t.Fatalf("VerifyIssued(%s) accepted subject %s", req.Kind, leaf.Subject)
			case !fuzzNow.Before(leaf.NotAfter) || leaf.NotBefore.After(fuzzNow.Add(opts.Skew)):
				t.Fatalf("VerifyIssued(%s) accepted validity %s–%s", req.Kind, leaf.NotBefore, leaf.NotAfter)
			case leaf.CheckSignatureFrom(ca.cert) != nil && len(certs) < 2:
				t.Fatalf("VerifyIssued(%s) accepted a lone certificate the CA did not sign", req.Kind)
			}
		}
	})
}

// fuzzBundleSeeds are the in-code seeds; the files in testdata hold a few of them.
func fuzzBundleSeeds(tb testing.TB, ca *testCA, key *ecdsa.PrivateKey) [][]byte {
	client := fuzzIssue(tb, ca, key.Public(), fuzzClient, time.Time{})
	serving := fuzzIssue(tb, ca, key.Public(), fuzzServing, time.Time{})
	keyPEM := fuzzKeyPEM(tb, key)
	block, _ := pem.Decode(client)
	der := block.Bytes
	other := fuzzKey(tb, "other")
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	return [][]byte{
		cat(client, keyPEM), // a stored pair: LoadPair and VerifyIssued(client) accept it
		cat(serving, ca.certPEM, keyPEM),
		cat(client, ca.certPEM), // two certificates
		client[:len(client)/2],  // truncated PEM
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der[:len(der)-20]}), // truncated DER
		keyPEM, // a key only
		cat(fuzzIssue(tb, ca, other.Public(), fuzzClient, time.Time{}), fuzzKeyPEM(tb, other)), // another key
		fuzzIssue(tb, ca, key.Public(), Request{Kind: Client, NodeName: "node-b"}, time.Time{}),
		fuzzIssue(tb, ca, key.Public(), fuzzClient, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)), // expired
		fuzzIssue(tb, fuzzCAWithKey(tb, "impostor-ca"), key.Public(), fuzzClient, time.Time{}),   // same CA name, another key
		[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
		[]byte("not pem"),
		nil,
	}
}
