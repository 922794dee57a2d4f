package bootstrap

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
)

// storedUsable returns kind's current certificate if it would pass the
// checks an issued one must pass now: our key, this node, the right usage and
// names, valid now, and chained to the CA of rc (or issuerCAFile). A
// certificate of another cluster (rebuilt, CA replaced) is not usable. The
// verdict for unchanged files and request is remembered; validity is checked
// against the clock every time.
func (b *Bootstrapper) storedUsable(kind Kind, rc *rest.Config) *x509.Certificate {
	req := b.request(kind) // the serving request looks up the primary IP: once
	key, err := b.usableKey(kind, rc, req)
	if err != nil {
		return nil
	}
	b.mu.Lock()
	cached, ok := b.usable[kind]
	b.mu.Unlock()
	if ok && cached.key == key {
		if cached.leaf == nil || !b.usableNow(cached.leaf) {
			return nil
		}
		return cached.leaf
	}
	leaf := b.verifyStored(CurrentPath(b.cfg.CertDir, kind), kind, req, rc)
	b.setUsable(kind, key, leaf)
	if leaf == nil || !b.usableNow(leaf) {
		return nil // an expired certificate is not finished with (TestExpiredNodeReattests)
	}
	return leaf
}

// usableKey is what a storedUsable verdict depends on: the files, the CA
// and the request.
func (b *Bootstrapper) usableKey(kind Kind, rc *rest.Config, req Request) (string, error) {
	key, err := filesKey(CurrentPath(b.cfg.CertDir, kind), rc.CAFile, b.cfg.IssuerCAFile)
	if err != nil {
		return "", err
	}
	return key + fmt.Sprintf("%x|%v|%v", rc.CAData, req.DNSNames, req.IPAddresses), nil
}

// rememberUsable records that leaf, just verified and stored as kind's
// current certificate with the credential rc, is usable.
func (b *Bootstrapper) rememberUsable(kind Kind, rc *rest.Config, leaf *x509.Certificate) {
	if key, err := b.usableKey(kind, rc, b.request(kind)); err == nil {
		b.setUsable(kind, key, leaf)
	}
}

// setUsable records storedUsable's verdict (leaf, or nil: not usable) for key.
func (b *Bootstrapper) setUsable(kind Kind, key string, leaf *x509.Certificate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.usable == nil {
		b.usable = map[Kind]usableCache{}
	}
	b.usable[kind] = usableCache{key: key, leaf: leaf}
}

// usableCache is storedUsable's last verdict and what it was about.
type usableCache struct {
	key  string
	leaf *x509.Certificate // nil: not usable whatever the time
}

// verifyStored runs VerifyIssued on the certificate at path. A certificate
// that fails only because it is not valid now is remembered as usable: the
// clock is checked at every call.
func (b *Bootstrapper) verifyStored(path string, kind Kind, req Request, rc *rest.Config) *x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	pair, err := LoadPair(path)
	if err != nil {
		return nil
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil
	}
	roots, err := caPool(rc, b.cfg.IssuerCAFile)
	if err != nil {
		return nil
	}
	// Verified at the certificate's own start, so that the verdict does not
	// depend on the time; ValidAt is checked against the clock by the caller.
	at := pair.Leaf.NotBefore
	if now := b.cfg.Clock.Now(); now.After(at) && now.Before(pair.Leaf.NotAfter) {
		at = now
	}
	leaf, err := VerifyIssued(data, key, req, VerifyOptions{Roots: roots, Now: at, Skew: b.cfg.Skew})
	if err != nil {
		return nil
	}
	return leaf
}
