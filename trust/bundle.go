package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Bundle is a set of CA certificates: no duplicates, oldest first (by
// NotBefore, then fingerprint), so that one set always encodes the same.
type Bundle struct {
	CAs []*x509.Certificate
}

// ErrRefused marks published trust the node will not adopt.
var ErrRefused = errors.New("refused")

// ParseBundle reads a PEM bundle of CA certificates. It refuses, wrapping
// ErrRefused, anything but CERTIFICATE blocks, bytes after the last one (a
// bundle cut short), a certificate that does not parse or is not a CA, and
// a bundle without one. Text before or between blocks is dropped, as the
// ClusterTrustBundle API lets its consumers do.
func ParseBundle(data []byte) (Bundle, error) {
	var b Bundle
	rest := data
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		rest = r
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			return Bundle{}, fmt.Errorf("%w: a %q PEM block where only CERTIFICATE blocks belong", ErrRefused, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return Bundle{}, fmt.Errorf("%w: certificate %d does not parse: %v", ErrRefused, len(b.CAs)+1, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return Bundle{}, fmt.Errorf("%w: %s is not a CA certificate", ErrRefused, Describe(c))
		}
		b.CAs = append(b.CAs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return Bundle{}, fmt.Errorf("%w: %d bytes that are not PEM after certificate %d", ErrRefused, len(bytes.TrimSpace(rest)), len(b.CAs))
	}
	if len(b.CAs) == 0 {
		return Bundle{}, fmt.Errorf("%w: no certificate in it", ErrRefused)
	}
	return b.normal(), nil
}

// ReadBundle is ParseBundle of the file at path.
func ReadBundle(path string) (Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Bundle{}, err
	}
	return ParseBundle(data)
}

// Merge is the union of bundles.
func Merge(bundles ...Bundle) Bundle {
	var all Bundle
	for _, b := range bundles {
		all.CAs = append(all.CAs, b.CAs...)
	}
	return all.normal()
}

// normal drops duplicates and sorts oldest first.
func (b Bundle) normal() Bundle {
	out := slices.Clone(b.CAs)
	slices.SortFunc(out, func(x, y *x509.Certificate) int {
		if c := x.NotBefore.Compare(y.NotBefore); c != 0 {
			return c
		}
		return strings.Compare(Fingerprint(x), Fingerprint(y))
	})
	out = slices.CompactFunc(out, func(x, y *x509.Certificate) bool { return x.Equal(y) })
	return Bundle{CAs: out}
}

// PEM encodes the bundle, oldest first.
func (b Bundle) PEM() []byte {
	var buf bytes.Buffer
	for _, c := range b.CAs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // a bytes.Buffer does not fail
	}
	return buf.Bytes()
}

// Equal reports whether b and o hold the same CAs.
func (b Bundle) Equal(o Bundle) bool {
	return slices.EqualFunc(b.normal().CAs, o.normal().CAs, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// Newest is the CA whose key came last: the one a signer whose published
// bundle this is issues from (docs/ca-rotation.md). A key is as old as its
// first certificate, so an old CA renewed with its key during the overlap
// (a later NotBefore) is not taken for the new one; of the newest key's
// certificates, the latest is returned.
func (b Bundle) Newest() *x509.Certificate {
	n := b.normal().CAs // oldest first
	first := map[string]time.Time{}
	for _, c := range n {
		k := string(c.RawSubjectPublicKeyInfo)
		if _, ok := first[k]; !ok {
			first[k] = c.NotBefore
		}
	}
	var newest *x509.Certificate
	for _, c := range n {
		if newest == nil || !first[string(c.RawSubjectPublicKeyInfo)].Before(first[string(newest.RawSubjectPublicKeyInfo)]) {
			newest = c
		}
	}
	return newest
}

// Pool is the bundle as roots.
func (b Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range b.CAs {
		p.AddCert(c)
	}
	return p
}

// SignerOf is the CA of b that signed leaf, nil if none did.
func (b Bundle) SignerOf(leaf *x509.Certificate) *x509.Certificate {
	for _, c := range b.CAs {
		if leaf.CheckSignatureFrom(c) == nil {
			return c
		}
	}
	return nil
}

// Describe names a CA for people: its common name and fingerprint.
func Describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q (sha256 %s)", c.Subject.CommonName, Fingerprint(c))
}

// DescribeAll names every CA of b.
func (b Bundle) DescribeAll() string {
	names := make([]string, len(b.CAs))
	for i, c := range b.CAs {
		names[i] = Describe(c)
	}
	return strings.Join(names, ", ")
}

// Fingerprint is the first 16 hex digits of the SHA-256 of c's DER: what
// the metrics, the status and the Events call a CA by.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}
