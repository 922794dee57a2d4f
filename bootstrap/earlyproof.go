package bootstrap

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"

	"k8s.io/client-go/rest"
)

// earlyProof asks the API server whether it accepts a just-issued client
// certificate while the certificate and kubelet.conf are written and synced,
// instead of after: the proof and the fsyncs overlap. Its connection is dialed
// as soon as the CSR is approved, the handshake waiting for the certificate
// (warm.go). It proves the files only if they hold exactly what was proven
// (provesFiles); otherwise the files are proven as before.
type earlyProof struct {
	cert []byte // the proven certificate's DER
	done chan error
	warm *warmConn // nil: the proof dials when it starts
}

// prepareProof dials boot's API server for the proof of a certificate the
// signer is about to issue.
func (b *Bootstrapper) prepareProof(ctx context.Context, boot *rest.Config) *earlyProof {
	p := &earlyProof{done: make(chan error, 1)}
	if b.realAPI {
		p.warm = warmUpPending(ctx, rest.AnonymousClientConfig(boot))
	}
	return p
}

// startProof starts the proof of certPEM and keyPEM against boot's server and
// CA, with the node's name, on p's connection if p was prepared (p may be nil).
// pair is certPEM and keyPEM parsed.
func (b *Bootstrapper) startProof(ctx context.Context, p *earlyProof, boot *rest.Config, certPEM, keyPEM []byte, pair *tls.Certificate) *earlyProof {
	if p == nil {
		p = &earlyProof{done: make(chan error, 1)}
	}
	p.cert = pair.Leaf.Raw
	rc := rest.AnonymousClientConfig(boot) // server, CA and transport settings; no token
	rc.CertData, rc.KeyData = certPEM, keyPEM
	p.warm.supply(rc, pair)
	go func() { p.done <- b.cfg.CheckIdentity(ctx, rc, b.cfg.NodeName) }()
	return p
}

// release ends the proof's connection once the proof is over (or never started).
func (p *earlyProof) release() {
	if p != nil {
		p.warm.release()
	}
}

// provesFiles waits for the proof and reports whether it succeeded for the
// very files node was read from: the same certificate and key (and they
// form a pair), the same server and CA as the bootstrap kubeconfig. nil
// proves nothing.
func (p *earlyProof) provesFiles(ctx context.Context, node *Node, boot *rest.Config) bool {
	if p == nil {
		return false
	}
	select {
	case err := <-p.done:
		if err != nil {
			return false
		}
	case <-ctx.Done():
		return false
	}
	rc := node.Config
	if rc.Host != boot.Host || rc.Insecure != boot.Insecure || rc.CertFile == "" || rc.KeyFile == "" {
		return false
	}
	switch {
	case boot.CAFile != "":
		abs, err := filepath.Abs(boot.CAFile)
		if err != nil || rc.CAFile != abs {
			return false
		}
	case !bytes.Equal(rc.CAData, boot.CAData):
		return false
	}
	// The files' key must be the pair of their certificate, and that
	// certificate the one proven (LoadNode read node.Leaf from the same file).
	pair, err := tls.LoadX509KeyPair(rc.CertFile, rc.KeyFile)
	if err != nil || len(pair.Certificate) == 0 {
		return false
	}
	return len(p.cert) > 0 && bytes.Equal(pair.Certificate[0], p.cert) && bytes.Equal(node.Leaf.Raw, p.cert)
}
