package trust

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseBundleRefuses(t *testing.T) {
	ca := newCAs(t)
	leaf := newServer(t, ca.old, "api.example")
	key := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key")}))
	withHeader := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: ca.old.cert.Raw}))
	broken := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
	tests := []struct {
		name, in, why string
	}{
		{"empty", "", "no certificate"},
		{"whitespace only", " \n\t\r\n ", "no certificate"},
		{"a private key", pemOf(ca.old.cert) + key, `a "PRIVATE KEY" PEM block`},
		{"a certificate block with headers", withHeader, `a "CERTIFICATE" PEM block`},
		{"garbage after the last certificate", pemOf(ca.old.cert, ca.new.cert) + "trailing\n", "8 bytes that are not PEM after certificate 2"},
		{"a certificate that does not parse", pemOf(ca.old.cert) + broken, "certificate 2 does not parse"},
		{"a leaf", pemOf(ca.old.cert, leaf), `"kube-apiserver" (sha256 ` + Fingerprint(leaf) + ") is not a CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBundle([]byte(tt.in))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("ParseBundle = %v, %v; want a refusal", names(b), err)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("the refusal %q does not say %q", err, tt.why)
			}
			if len(b.CAs) != 0 {
				t.Errorf("a refused bundle still holds %v", names(b))
			}
		})
	}
}

func TestParseBundleAccepts(t *testing.T) {
	ca := newCAs(t)
	old, nw, inter := ca.old.cert, ca.new.cert, ca.inter.cert
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"one CA", pemOf(old), []string{"cluster-ca-old"}},
		{"several CAs, sorted oldest first", pemOf(inter, old, nw), []string{"cluster-ca-old", "cluster-ca-new", "cluster-ca-intermediate"}},
		{"duplicates dropped", pemOf(nw, old, nw, old), []string{"cluster-ca-old", "cluster-ca-new"}},
		{"blank lines around blocks", "\n\n" + pemOf(old) + "\n\n" + pemOf(nw) + "\n", []string{"cluster-ca-old", "cluster-ca-new"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBundle([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got := names(b); !slices.Equal(got, tt.want) {
				t.Errorf("CAs = %v, want %v", got, tt.want)
			}
			again, err := ParseBundle(b.PEM())
			if err != nil {
				t.Fatalf("parsing PEM(): %v", err)
			}
			if !again.Equal(b) || !bytes.Equal(again.PEM(), b.PEM()) {
				t.Errorf("PEM() does not round-trip: %v became %v", names(b), names(again))
			}
		})
	}
}

func TestBundleEqualIgnoresOrder(t *testing.T) {
	ca := newCAs(t)
	old, nw := ca.old.cert, ca.new.cert
	tests := []struct {
		name string
		a, b Bundle
		want bool
	}{
		{"same CAs in another order", Bundle{CAs: []*x509.Certificate{old, nw}}, Bundle{CAs: []*x509.Certificate{nw, old}}, true},
		{"a duplicate", Bundle{CAs: []*x509.Certificate{old, nw, old}}, Bundle{CAs: []*x509.Certificate{nw, old}}, true},
		{"one CA more", Bundle{CAs: []*x509.Certificate{old}}, Bundle{CAs: []*x509.Certificate{nw, old}}, false},
		{"other CAs", Bundle{CAs: []*x509.Certificate{old}}, Bundle{CAs: []*x509.Certificate{nw}}, false},
		{"both empty", Bundle{}, Bundle{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.want {
				t.Errorf("%v.Equal(%v) = %v, want %v", names(tt.a), names(tt.b), got, tt.want)
			}
			if got := tt.b.Equal(tt.a); got != tt.want {
				t.Errorf("%v.Equal(%v) = %v, want %v", names(tt.b), names(tt.a), got, tt.want)
			}
		})
	}
}

func TestBundleNewestAndSignerOf(t *testing.T) {
	ca := newCAs(t)
	old, nw, inter := ca.old.cert, ca.new.cert, ca.inter.cert
	stranger := newCA(t, "stranger", base, nil)
	tests := []struct {
		name               string
		b                  Bundle
		leaf               *x509.Certificate
		newest, wantSigner *x509.Certificate
	}{
		{"leaf by old CA, bundle unsorted", Bundle{CAs: []*x509.Certificate{nw, old}}, newServer(t, ca.old, "a"), nw, old},
		{"leaf by new CA", Bundle{CAs: []*x509.Certificate{old, nw}}, newServer(t, ca.new, "a"), nw, nw},
		{"intermediate newest", bundleOf(t, inter, old, nw), newServer(t, ca.inter, "a"), inter, inter},
		{"leaf by a CA not in it", bundleOf(t, old, nw), newServer(t, stranger, "a"), nw, nil},
		{"empty bundle", Bundle{}, newServer(t, ca.old, "a"), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Newest(); !same(got, tt.newest) {
				t.Errorf("Newest = %s, want %s", cn(got), cn(tt.newest))
			}
			if got := tt.b.SignerOf(tt.leaf); !same(got, tt.wantSigner) {
				t.Errorf("SignerOf = %s, want %s", cn(got), cn(tt.wantSigner))
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	ca := newCAs(t)
	for _, c := range []*x509.Certificate{ca.old.cert, ca.new.cert} {
		sum := sha256.Sum256(c.Raw)
		got := Fingerprint(c)
		if len(got) != 16 || got != hex.EncodeToString(sum[:])[:16] {
			t.Errorf("Fingerprint(%s) = %q, want the first 16 hex digits of %x", c.Subject.CommonName, got, sum)
		}
	}
	if Fingerprint(ca.old.cert) == Fingerprint(ca.new.cert) {
		t.Error("two CAs have one fingerprint")
	}
}

// TestNewestIsTheNewestKey: an old CA renewed with its own key during the
// overlap starts after the new CA, but the new CA's key is still the one the
// signer issues from; a leaf of the old key needs re-issue.
func TestNewestIsTheNewestKey(t *testing.T) {
	ca := newCAs(t)
	tmpl := *ca.old.cert
	tmpl.NotBefore, tmpl.RawSubject = ca.new.cert.NotBefore.Add(24*time.Hour), nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &ca.old.key.PublicKey, ca.old.key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	b := bundleOf(t, ca.old.cert, ca.new.cert, renewed)
	if got := b.Newest(); !same(got, ca.new.cert) {
		t.Fatalf("Newest = %s (NotBefore %s), want the new CA's key", cn(got), got.NotBefore)
	}
	if _, need := NeedsReissue(newServer(t, ca.old, "a"), b); !need {
		t.Fatal("a leaf of the old key does not need re-issue once the new key is published")
	}
}
