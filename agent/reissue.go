package agent

import (
	"context"
	"crypto/x509"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/trust"
)

// planReissue re-issues kind's certificate, after a random part of
// trust.reissueSpread, when it was not signed by the CA its signer's
// published bundle names as the one it issues from now (the newest). A
// re-issue that came back from the old CA (the signer has not moved yet) is
// not tried again for the same CA: the next renewal or the next change of
// the bundle will.
func (fo *follower) planReissue(ctx context.Context, kind bootstrap.Kind, b trust.Bundle) {
	leaf := currentLeaf(fo.a.Config().CertDir, kind)
	issuing, need := trust.NeedsReissue(leaf, b)
	fo.mu.Lock()
	defer fo.mu.Unlock()
	if !need {
		delete(fo.tried, kind)
		return
	}
	fp := trust.Fingerprint(issuing)
	if fo.reissuing[kind] || fo.tried[kind] == fp {
		return
	}
	fo.reissuing[kind] = true
	delay := time.Duration(fo.a.rand() * float64(fo.a.Config().ReissueSpread()))
	fo.a.log.Info("the certificate's signer issues from a new CA: re-issuing it", zap.String("certificate", string(kind)),
		zap.String("signed_by", leaf.Issuer.CommonName), zap.String("new_ca", trust.Describe(issuing)), zap.Duration("in", delay))
	fo.a.events.ReissueScheduled(kind, trust.Describe(issuing), delay.Round(time.Second).String())
	fo.wg.Go(func() { fo.reissue(ctx, kind, issuing, delay) })
}

// reissue waits delay, has kind's loop renew now, and checks what came back.
func (fo *follower) reissue(ctx context.Context, kind bootstrap.Kind, issuing *x509.Certificate, delay time.Duration) {
	defer func() {
		fo.mu.Lock()
		fo.reissuing[kind] = false
		fo.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return
	case <-fo.a.clock.After(delay):
	}
	if leaf := currentLeaf(fo.a.Config().CertDir, kind); leaf != nil && leaf.CheckSignatureFrom(issuing) == nil {
		return // renewed from the new CA meanwhile (a renewal that fell due)
	}
	fo.a.mu.Lock()
	w := fo.a.loops[kind]
	fo.a.mu.Unlock()
	if w == nil {
		return
	}
	// The loop may never answer (a step stuck past the workers' stop
	// grace): waiting on it without ctx would hold up the daemon's stop.
	var o rotate.Outcome
	select {
	case <-ctx.Done():
		return
	case o = <-w.loop.Request(ctx, true):
	}
	if o.Err != nil {
		return // the loop retries with its back-off; the next round plans again
	}
	leaf := currentLeaf(fo.a.Config().CertDir, kind)
	if leaf != nil && leaf.CheckSignatureFrom(issuing) == nil {
		return
	}
	fo.mu.Lock()
	fo.tried[kind] = trust.Fingerprint(issuing)
	fo.mu.Unlock()
	fo.a.log.Warn("re-issued, but the signer still issues from the old CA though its published bundle names a newer one: publish the new CA for the signer only once kube-controller-manager signs with it",
		zap.String("certificate", string(kind)), zap.String("published_newest", trust.Describe(issuing)))
}

// currentLeaf is kind's stored certificate, nil if none.
func currentLeaf(certDir string, kind bootstrap.Kind) *x509.Certificate {
	leaf, _ := bootstrap.CurrentLeaf(certDir, kind)
	return leaf
}

// noteCA records which CA signed kind's stored certificate leaf: one of the
// CAs published or kubelet.conf's, named by fingerprint, else by the
// certificate's issuer alone.
func (a *Agent) noteCA(kind bootstrap.Kind, leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	known := a.knownCAs()
	name, sha := leaf.Issuer.CommonName, ""
	if ca := known.SignerOf(leaf); ca != nil {
		name, sha = ca.Subject.CommonName, trust.Fingerprint(ca)
	}
	a.certs.Update(kind, func(s *observe.Cert) { s.CA, s.CASHA = name, sha })
}

// knownCAs are the CAs the node knows: kubelet.conf's and, when following,
// every CA published.
func (a *Agent) knownCAs() trust.Bundle {
	var parts []trust.Bundle
	if node, err := a.bootstrapper().LoadNode(); err == nil && node != nil {
		if b, err := trust.ParseBundle(node.Config.CAData); err == nil {
			parts = append(parts, b)
		} else if b, err := trust.ReadBundle(node.Config.CAFile); err == nil {
			parts = append(parts, b)
		}
	}
	a.mu.Lock()
	fo := a.trust
	a.mu.Unlock()
	if fo != nil {
		fo.mu.Lock()
		parts = append(parts, fo.known)
		fo.mu.Unlock()
	}
	return trust.Merge(parts...)
}
