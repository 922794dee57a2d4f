package bootstrap

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/internal/failpoint"
)

// Obtain requests a certificate of kind with the credential cred, waits until
// it is issued, verifies it and stores it. The key stays on disk until then
// (keyFate says when it goes), so calling Obtain again after a crash or a
// cancelled wait continues with the same CSR. When our pending CSR asks for
// names the node no longer has, it makes one new request with a new key.
func (b *Bootstrapper) Obtain(ctx context.Context, kind Kind, cred Credential) (*x509.Certificate, error) {
	defer b.settle(ctx, kind)
	return b.obtainCertificate(ctx, kind, cred)
}

// obtainCertificate is Obtain without the wait for the pending key's removal.
func (b *Bootstrapper) obtainCertificate(ctx context.Context, kind Kind, cred Credential) (*x509.Certificate, error) {
	leaf, err := b.obtain(ctx, kind, cred)
	if errors.Is(err, errStaleRequest) {
		b.log.Info("our pending CSR asks for other names than the node has now; posting a new one", zap.String("certificate", string(kind)), zap.Error(err))
		leaf, err = b.obtain(ctx, kind, cred)
	}
	return leaf, err
}

// settle waits for what a request of kind left running: the removal of its
// stored certificate's pending key. Every exported step calls it before it
// returns, so no request of kind starts while the last one's removal is
// under way. A step whose ctx is cancelled (the daemon stopping) does not
// wait: the removal finishes on its own, or a crash leaves the key, which
// the next request discards or reuses as it would any pending key.
func (b *Bootstrapper) settle(ctx context.Context, kind Kind) {
	b.mu.Lock()
	done := b.discarding[kind]
	delete(b.discarding, kind)
	b.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// obtain is one request: pending key, CSR, wait, verification, store.
func (b *Bootstrapper) obtain(ctx context.Context, kind Kind, cred Credential) (leaf *x509.Certificate, err error) {
	log := b.log.With(zap.String("certificate", string(kind)))
	roots, err := caPool(cred.Config, b.cfg.IssuerCAFile)
	if err != nil {
		return nil, err
	}
	if err := CheckDirSafe(b.cfg.CertDir); err != nil {
		return nil, err
	}
	if err := EnsureCertDir(b.cfg.CertDir); err != nil {
		return nil, err
	}
	key, keyPEM, fresh, err := b.pendingKey(kind)
	if err != nil {
		return nil, err
	}
	// The key's fate, decided in this one place from how the attempt ended.
	posted := false
	defer func() { b.settleKey(kind, keyFate(err, fresh, posted), err == nil, log) }()
	failpoint.Inject("obtain.key-ready")
	req := b.request(kind)
	var csrName string
	var certPEM []byte
	if cred.attest != nil {
		certPEM, err = b.attestAndReceive(ctx, req, cred, key, &posted, log)
	} else {
		csrName, certPEM, err = b.postAndWait(ctx, req, cred, key, &posted, log)
	}
	if csrName != "" {
		log = csrLog(log, req, csrName) // the key's fate and the store are told with the CSR
	}
	if err != nil {
		return nil, err
	}
	failpoint.Inject("obtain.issued")
	now := b.cfg.Clock.Now()
	leaf, err = VerifyIssued(certPEM, key, req, VerifyOptions{Roots: roots, Now: now, Skew: b.cfg.Skew})
	if err != nil {
		return nil, &refusedError{csr: csrName, err: err}
	}
	path, err := b.store(kind, certPEM, keyPEM, now)
	if err != nil {
		return nil, err
	}
	b.rememberUsable(kind, cred.Config, leaf) // just verified: the next step need not verify it again
	log.Info("certificate stored", zap.String("path", path), zap.Time("not_after", leaf.NotAfter), zap.String("serial", leaf.SerialNumber.Text(16)))
	if removed, err := Prune(b.cfg.CertDir, kind, b.cfg.Keep); err != nil {
		log.Warn("pruning old certificates", zap.Error(err))
	} else if len(removed) > 0 {
		log.Info("pruned old certificates", zap.Strings("removed", removed))
	}
	return leaf, nil
}

// settleKey carries out the pending key's fate once the attempt is over. A
// key discarded because its certificate was stored lives in the certificate
// file now, and its removal (a slow unlink where the file system discards
// freed blocks) need not hold up kubelet.conf and the proof: it runs in the
// background, and the step waits for it before it returns (settle).
func (b *Bootstrapper) settleKey(kind Kind, f fate, stored bool, log *zap.Logger) {
	if f != discardKey {
		return
	}
	discard := func() {
		if derr := discardPendingKey(b.cfg.CertDir, kind); derr != nil {
			log.Warn("discarding the pending key", zap.Error(derr))
		}
		failpoint.Inject("obtain.key-discarded")
	}
	if !stored {
		discard()
		return
	}
	done := make(chan struct{})
	b.mu.Lock()
	b.discarding[kind] = done
	b.mu.Unlock()
	go func() {
		defer close(done)
		discard()
	}()
}

// postAndWait posts req's CSR with cred (or finds ours from an earlier
// attempt) and waits by watch until it is issued. It sets posted once the CSR
// exists on the server.
func (b *Bootstrapper) postAndWait(ctx context.Context, req Request, cred Credential, key crypto.Signer, posted *bool, log *zap.Logger) (csrName string, certPEM []byte, err error) {
	kind := req.Kind
	client, err := b.csrClient(cred)
	if err != nil {
		return "", nil, fmt.Errorf("building client for %s: %w", cred.Path, err)
	}
	csr, created, err := ensureCSR(ctx, client, req, key)
	if err != nil {
		return "", nil, explainAPIError(err, fmt.Sprintf("requesting the %s certificate", kind), cred, b.cfg.BootstrapKubeconfigPath)
	}
	*posted = true
	failpoint.Inject("obtain.csr-posted")
	log = csrLog(log, req, csr.Name)
	if created {
		log.Info("posted certificate signing request", zap.Strings("dns_names", req.DNSNames), zap.Strings("ip_addresses", ipStrings(req.IPAddresses)))
	} else {
		log.Info("found our pending certificate signing request from an earlier attempt")
	}
	if kind == Serving && Pending(csr) {
		log.Info("waiting for approval: nothing in Kubernetes approves kubelet serving CSRs automatically; approve it after checking its names, or run an approver such as kubelet-csr-approver",
			zap.String("approve_with", "kubectl certificate approve "+csr.Name))
	} else if Pending(csr) {
		log.Info("waiting for the CSR to be approved and issued")
	}
	b.waiting(kind, csr.Name)
	if kind == Serving && Pending(csr) {
		b.checkServingNames(ctx, cred, req, csr.Name, log)
	}
	certPEM, err = waitForCertificate(ctx, b.cfg.Clock, client, csr)
	b.waiting(kind, "")
	if err != nil {
		return csr.Name, nil, explainAPIError(err, fmt.Sprintf("waiting for the %s certificate", kind), cred, b.cfg.BootstrapKubeconfigPath)
	}
	return csr.Name, certPEM, nil
}

// csrLog is log with the fields that name the CSR name of req.
func csrLog(log *zap.Logger, req Request, name string) *zap.Logger {
	return log.With(zap.String("csr", name), zap.String("signer", req.Kind.Signer()))
}

// store writes the verified certificate of kind with its key, after
// BeforeStore (which may refuse), and returns its path.
func (b *Bootstrapper) store(kind Kind, certPEM, keyPEM []byte, now time.Time) (string, error) {
	if b.cfg.BeforeStore != nil {
		if err := b.cfg.BeforeStore(kind); err != nil {
			return "", err
		}
	}
	path, err := storeCertificate(b.cfg.CertDir, kind, certPEM, keyPEM, now)
	if err != nil {
		return "", err
	}
	failpoint.Inject("obtain.stored")
	return path, nil
}

func (b *Bootstrapper) waiting(kind Kind, csr string) {
	if b.cfg.OnWaiting != nil {
		b.cfg.OnWaiting(kind, csr)
	}
}

// pendingKey loads the pending key of kind, or makes one. A key left by a
// crash after its certificate was stored is replaced by a new one.
func (b *Bootstrapper) pendingKey(kind Kind) (crypto.Signer, []byte, bool, error) {
	key, keyPEM, fresh, err := loadOrCreatePendingKey(b.cfg.CertDir, kind)
	if err != nil || fresh || !b.pendingKeyAlreadyStored(kind, key) {
		return key, keyPEM, fresh, err
	}
	if err := discardPendingKey(b.cfg.CertDir, kind); err != nil {
		return nil, nil, false, err
	}
	return loadOrCreatePendingKey(b.cfg.CertDir, kind)
}

// pendingKeyAlreadyStored reports whether the current certificate of kind
// already uses key.
func (b *Bootstrapper) pendingKeyAlreadyStored(kind Kind, key crypto.Signer) bool {
	leaf, err := CurrentLeaf(b.cfg.CertDir, kind)
	return err == nil && publicKeysEqual(leaf.PublicKey, key.Public())
}

// refusedError: the issued certificate failed verification; nothing was written.
type refusedError struct {
	csr string
	err error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("CSR %s: refusing the issued certificate, nothing was written: %v", e.csr, e.err)
}

func (e *refusedError) Unwrap() error { return e.err }

type fate int

const (
	keepKey fate = iota
	discardKey
)

// keyFate decides, from how an attempt ended, whether its pending key is
// kept for the next attempt (which then finds the same CSR by name) or
// discarded (the next attempt makes a new key, so a new request). A key is
// kept whenever the CSR may still be issued, or may exist on the server.
// fresh: the key was made by this attempt; posted: its CSR was created (or
// found) on the server.
func keyFate(err error, fresh, posted bool) fate {
	var csrErr *CSRError
	var refused *refusedError
	switch {
	case err == nil:
		return discardKey // stored: the key now lives in the certificate file
	case errors.As(err, &csrErr):
		// Denied or failed: never issued. Deleted (by a person or the
		// cleaner): the same name is posted again.
		return map[bool]fate{true: keepKey, false: discardKey}[csrErr.Outcome == OutcomeDeleted]
	case errors.As(err, &refused):
		// The CSR's certificate can never be used (another key, node, usage
		// or CA, garbage, expired) — unless it only starts in the future
		// (clock skew), which waiting fixes.
		if errors.Is(err, ErrNotYetValid) {
			return keepKey
		}
		return discardKey
	case errors.Is(err, errStaleRequest), errors.Is(err, errNotOurs):
		return discardKey // our name is taken by a request we cannot use
	case fresh && !posted && requestNotApplied(err):
		return discardKey // the create never took effect: the server holds no CSR for this key
	}
	return keepKey
}
