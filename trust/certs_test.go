package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// base is when the test CAs' world starts; checks run at now.
var (
	base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now  = base.Add(60 * 24 * time.Hour)
)

// keyed is a certificate with the key that signs for it.
type keyed struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue signs tmpl with parent's key, or with its own key when parent is nil.
func issue(t testing.TB, tmpl *x509.Certificate, parent *keyed) *keyed {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &keyed{cert: c, key: key}
}

// newCA is a CA named cn valid from notBefore, self-signed when parent is nil.
func newCA(t testing.TB, cn string, notBefore time.Time, parent *keyed) *keyed {
	return issue(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: base.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, parent)
}

// newServer is a serving leaf for names (DNS names or IP addresses) issued by parent.
func newServer(t testing.TB, parent *keyed, names ...string) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: base, NotAfter: base.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return issue(t, tmpl, parent).cert
}

// cas is the test's rotation: old, then new, and an intermediate under new.
type cas struct{ old, new, inter *keyed }

func newCAs(t testing.TB) cas {
	old := newCA(t, "cluster-ca-old", base, nil)
	nw := newCA(t, "cluster-ca-new", base.Add(30*24*time.Hour), nil)
	return cas{old: old, new: nw, inter: newCA(t, "cluster-ca-intermediate", base.Add(31*24*time.Hour), nw)}
}

// pemOf encodes certificates as one PEM text.
func pemOf(certs ...*x509.Certificate) string {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out)
}

// bundleOf is a Bundle of certs, parsed as the node would.
func bundleOf(t testing.TB, certs ...*x509.Certificate) Bundle {
	t.Helper()
	b, err := ParseBundle([]byte(pemOf(certs...)))
	if err != nil {
		t.Fatalf("parsing the test bundle: %v", err)
	}
	return b
}

// names lists the common names of b's CAs, in order.
func names(b Bundle) []string {
	out := make([]string, len(b.CAs))
	for i, c := range b.CAs {
		out[i] = c.Subject.CommonName
	}
	return out
}

// same reports whether a and b are one certificate, or both nil.
func same(a, b *x509.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// cn names c in a test's message.
func cn(c *x509.Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.Subject.CommonName
}
