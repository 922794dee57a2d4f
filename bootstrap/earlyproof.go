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
// instead of after: the proof and the fsyncs overlap. It proves the files
// only if they hold exactly what was proven (provesFiles); otherwise the
// files are proven as before.
type earlyProof struct {
	certPEM, keyPEM []byte
	done            chan error
}

// startProof starts the proof of certPEM and keyPEM against boot's server and
// CA, with the node's name.
func (b *Bootstrapper) startProof(ctx context.Context, boot *rest.Config, certPEM, keyPEM []byte) *earlyProof {
	p := &earlyProof{certPEM: certPEM, keyPEM: keyPEM, done: make(chan error, 1)}
	rc := rest.AnonymousClientConfig(boot) // server, CA and transport settings; no token
	rc.CertData, rc.KeyData = certPEM, keyPEM
	go func() { p.done <- b.cfg.CheckIdentity(ctx, rc, b.cfg.NodeName) }()
	return p
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
	pair, err := tls.LoadX509KeyPair(rc.CertFile, rc.KeyFile)
	if err != nil || len(pair.Certificate) == 0 {
		return false
	}
	proven, err := tls.X509KeyPair(p.certPEM, p.keyPEM)
	if err != nil || len(proven.Certificate) == 0 {
		return false
	}
	return bytes.Equal(pair.Certificate[0], proven.Certificate[0]) && bytes.Equal(node.Leaf.Raw, proven.Certificate[0])
}
