package bootstrap

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/certagent/certagent/internal/failpoint"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"
)

// Obtain requests a certificate of kind with the credential rc (read from
// source, a path named in errors), waits until it is issued, verifies it and
// stores it. The key stays on disk until then, so calling Obtain again after
// a crash or a cancelled wait continues with the same CSR.
func (b *Bootstrapper) Obtain(ctx context.Context, kind Kind, rc *rest.Config, source string) (*x509.Certificate, error) {
	log := b.log.With(zap.String("certificate", string(kind)))
	roots, err := caPool(rc, b.cfg.IssuerCAFile)
	if err != nil {
		return nil, err
	}
	if err := CheckDirSafe(b.cfg.CertDir); err != nil {
		return nil, err
	}
	if err := EnsureCertDir(b.cfg.CertDir); err != nil {
		return nil, err
	}
	key, keyPEM, fresh, err := loadOrCreatePendingKey(b.cfg.CertDir, kind)
	if err != nil {
		return nil, err
	}
	if !fresh && b.pendingKeyAlreadyStored(kind, key) {
		// A crash after storing but before discarding the key: start over with a new key.
		if err := discardPendingKey(b.cfg.CertDir, kind); err != nil {
			return nil, err
		}
		if key, keyPEM, fresh, err = loadOrCreatePendingKey(b.cfg.CertDir, kind); err != nil {
			return nil, err
		}
	}
	failpoint.Inject("obtain.key-ready")
	req := b.request(kind)
	client, err := b.cfg.NewCSRClient(rc)
	if err != nil {
		return nil, fmt.Errorf("building client for %s: %w", source, err)
	}
	csr, created, err := ensureCSR(ctx, client, req, key)
	if errors.Is(err, errStaleRequest) {
		// Our pending CSR asks for other names (the node's address changed):
		// it can no longer be useful, so start over with a new key.
		log.Info("our pending CSR asks for other names than the node has now; posting a new one", zap.Error(err))
		if err := discardPendingKey(b.cfg.CertDir, kind); err != nil {
			return nil, err
		}
		return b.Obtain(ctx, kind, rc, source)
	}
	if err != nil {
		if fresh && requestNotApplied(err) {
			// The server surely holds no CSR for this key: leave the directory as it was.
			_ = discardPendingKey(b.cfg.CertDir, kind)
		}
		return nil, explainAPIError(err, fmt.Sprintf("requesting the %s certificate", kind), source, rc.Host, forbiddenHint(kind))
	}
	failpoint.Inject("obtain.csr-posted")
	log = log.With(zap.String("csr", csr.Name), zap.String("signer", req.Kind.Signer()))
	if created {
		log.Info("posted certificate signing request", zap.Strings("dns_names", req.DNSNames), zap.Strings("ip_addresses", ipStrings(req.IPAddresses)))
	} else {
		log.Info("found our pending certificate signing request from an earlier attempt")
	}
	if b.cfg.OnWaiting != nil {
		b.cfg.OnWaiting(kind, csr.Name)
	}
	if kind == Serving && Pending(csr) {
		log.Info("waiting for approval: nothing in Kubernetes approves kubelet serving CSRs automatically; approve it after checking its names, or run an approver such as kubelet-csr-approver",
			zap.String("approve_with", "kubectl certificate approve "+csr.Name))
	} else if Pending(csr) {
		log.Info("waiting for the CSR to be approved and issued")
	}
	certPEM, err := waitForCertificate(ctx, client, csr)
	if err != nil {
		var csrErr *CSRError
		if errors.As(err, &csrErr) && csrErr.Outcome != OutcomeDeleted {
			if derr := discardPendingKey(b.cfg.CertDir, kind); derr != nil {
				log.Warn("discarding the pending key", zap.Error(derr))
			}
		}
		return nil, explainAPIError(err, fmt.Sprintf("waiting for the %s certificate", kind), source, rc.Host, forbiddenHint(kind))
	}
	failpoint.Inject("obtain.issued")
	now := b.cfg.Clock.Now()
	leaf, err := VerifyIssued(certPEM, key, req, VerifyOptions{Roots: roots, Now: now, Skew: b.cfg.Skew})
	if err != nil {
		if !errors.Is(err, ErrNotYetValid) {
			// The CSR's certificate can never be used (another key, node or
			// usage, another CA, garbage, expired): the next attempt must be a
			// new request, not this CSR again. Only a certificate that starts
			// in the future (clock skew) becomes good by waiting.
			_ = discardPendingKey(b.cfg.CertDir, kind)
		}
		return nil, fmt.Errorf("CSR %s: refusing the issued certificate, nothing was written: %w", csr.Name, err)
	}
	path, err := storeCertificate(b.cfg.CertDir, kind, certPEM, keyPEM, now)
	if err != nil {
		return nil, err
	}
	failpoint.Inject("obtain.stored")
	if err := discardPendingKey(b.cfg.CertDir, kind); err != nil {
		log.Warn("discarding the pending key after storing", zap.Error(err))
	}
	failpoint.Inject("obtain.key-discarded")
	log.Info("certificate stored", zap.String("path", path), zap.Time("not_after", leaf.NotAfter), zap.String("serial", leaf.SerialNumber.Text(16)))
	if removed, err := Prune(b.cfg.CertDir, kind, b.cfg.Keep); err != nil {
		log.Warn("pruning old certificates", zap.Error(err))
	} else if len(removed) > 0 {
		log.Info("pruned old certificates", zap.Strings("removed", removed))
	}
	if b.cfg.OnStored != nil {
		b.cfg.OnStored(kind, path, leaf)
	}
	return leaf, nil
}

// pendingKeyAlreadyStored reports whether the current certificate of kind
// already uses key.
func (b *Bootstrapper) pendingKeyAlreadyStored(kind Kind, key crypto.Signer) bool {
	pair, err := LoadCurrent(b.cfg.CertDir, kind)
	return err == nil && publicKeysEqual(pair.Leaf.PublicKey, key.Public())
}

func forbiddenHint(kind Kind) string {
	if kind == Serving {
		return "a node may create CSRs through the Node authorizer: check that the API server runs with --authorization-mode including Node"
	}
	return "the bootstrap token's group needs the ClusterRole system:node-bootstrapper (kubeadm binds it as ClusterRoleBinding kubeadm:kubelet-bootstrap)"
}
