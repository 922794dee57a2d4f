package bootstrap

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/internal/atomicfile"
	"github.com/certagent/certagent/internal/failpoint"
)

// Attestation is the second way to a first client certificate, beside the
// bootstrap token: the node's TPM proves who it is to the attestation
// service (package bootstrap/tpm), which has the node's own CSR issued for
// the name enrolled for that TPM. Nothing secret is on the node for it.
type Attestation struct {
	// Attest runs one exchange for a client CSR (PEM, made with the pending
	// key, which never leaves the node) and returns the issued chain (PEM).
	// A refusal is a *attestation.Error (protocol/attestation).
	Attest func(ctx context.Context, csrPEM []byte) ([]byte, error)
	// Service names the service in messages (its URL).
	Service string
	// Server and CAFile are the API server and the cluster CA: kubelet.conf
	// reaches the API server with them, and the issued certificate must
	// chain to the CA (or to IssuerCAFile).
	Server string
	CAFile string
	// AfterToken: a bootstrap kubeconfig, when there is one, is tried first.
	// By default attestation is (see docs/attestation.md for why).
	AfterToken bool
}

// SourceAttestation and SourceToken name how the client certificate was
// obtained (ObtainedBy); SourceRenewal: renewed with the node's own.
const (
	SourceAttestation = "TPM attestation"
	SourceToken       = "bootstrap token"
	SourceRenewal     = "renewal with the node's certificate"
)

// sourcePath is where the source of the current client certificate is
// recorded, for `certagent status`.
func sourcePath(certDir string) string { return filepath.Join(certDir, ".certagent-client-source") }

// ObtainedBy says how the current client certificate in certDir was
// obtained ("" if unknown: stored by an older certagent, or by the kubelet).
func ObtainedBy(certDir string) string {
	data, err := os.ReadFile(sourcePath(certDir))
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(data))
}

// recordSource writes how the client certificate just stored was obtained.
// A failure is logged: the certificate is in place either way.
func (b *Bootstrapper) recordSource(source string) {
	if err := atomicfile.WriteFile(sourcePath(b.cfg.CertDir), []byte(source+"\n"), 0o600); err != nil {
		b.log.Warn("recording how the client certificate was obtained", zap.Error(err))
	}
}

// attestAndReceive has req's CSR, signed by key, issued through attestation.
// The CSR is kept beside the pending key until the certificate is stored,
// so that a retry (the service restarted, the node rebooted) sends the very
// same request and the service finds the CSR it may already have made.
func (b *Bootstrapper) attestAndReceive(ctx context.Context, req Request, cred Credential, key crypto.Signer, posted *bool, log *zap.Logger) ([]byte, error) {
	csrPEM, err := pendingCSR(b.cfg.CertDir, req, key)
	if err != nil {
		return nil, err
	}
	*posted = true // the service may hold a CSR for this key from now on
	log.Info("proving the node's TPM to the attestation service", zap.String("service", cred.Path))
	chain, err := cred.attest(ctx, csrPEM)
	if err != nil {
		return nil, fmt.Errorf("attesting to %s: %w", cred.Path, err)
	}
	failpoint.Inject("obtain.attested")
	return chain, nil
}

// PendingAttestation reports whether kind's pending key belongs to a request
// made through attestation (its CSR is kept with it).
func PendingAttestation(certDir string, kind Kind) bool {
	_, err := os.Stat(pendingCSRPath(certDir, kind))
	return err == nil
}

// pendingCSRPath is the CSR made with the pending key of kind, kept with it.
func pendingCSRPath(certDir string, kind Kind) string {
	return PendingKeyPath(certDir, kind) + ".csr"
}

// pendingCSR returns the CSR for req kept with the pending key, or makes and
// keeps one (a new signature each time would make a new request).
func pendingCSR(certDir string, req Request, key crypto.Signer) ([]byte, error) {
	path := pendingCSRPath(certDir, req.Kind)
	if data, err := os.ReadFile(path); err == nil {
		if csr, err := parseCSR(data); err == nil && publicKeysEqual(csr.PublicKey, key.Public()) &&
			csr.Subject.CommonName == req.Subject().CommonName {
			return data, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading pending CSR %s: %w", path, err)
	}
	subject := req.Subject()
	data, err := cert.MakeCSR(key, &subject, req.DNSNames, req.IPAddresses)
	if err != nil {
		return nil, fmt.Errorf("making CSR: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("saving pending CSR: %w", err)
	}
	return data, nil
}
