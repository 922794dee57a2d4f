package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certagent/certagent/bootstrap"
)

// certState is what the agent knows about one of the two certificates; it
// feeds the systemd STATUS line and the metrics.
type certState struct {
	notAfter    time.Time // of the stored certificate; zero if none
	deadline    time.Time // renewal deadline of the stored certificate
	waitingCSR  string    // CSR being waited on, if any
	lastErr     error     // last failure, cleared by a success
	retryAt     time.Time // when the next attempt after lastErr is due
	attempts    uint64    // requests made (bootstrap or renewal)
	errors      uint64    // failed attempts
	lastSuccess time.Time // last time a certificate was stored
	hookErrors  uint64
}

// errNeedClient: the serving certificate waits for a valid client certificate.
var errNeedClient = errors.New("waiting for a valid client certificate")

func (a *Agent) state(kind bootstrap.Kind) *certState {
	if s, ok := a.states[kind]; ok {
		return s
	}
	s := &certState{}
	a.states[kind] = s
	return s
}

func (a *Agent) update(kind bootstrap.Kind, f func(*certState)) {
	a.mu.Lock()
	f(a.state(kind))
	a.mu.Unlock()
	a.publishStatus()
}

// noteCertificate records the stored certificate of kind.
func (a *Agent) noteCertificate(kind bootstrap.Kind, leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	deadline := a.deadline(leaf)
	a.update(kind, func(s *certState) { s.notAfter, s.deadline = leaf.NotAfter, deadline })
}

// statusLine is the one line systemd shows: what the agent is doing, in terms
// a person can act on.
func (a *Agent) statusLine() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	parts := []string{a.describe(bootstrap.Client, now)}
	if a.cfg.ServingEnabled() {
		parts = append(parts, "serving: "+a.describe(bootstrap.Serving, now))
	}
	return strings.Join(parts, "; ")
}

// describe renders one certificate's state; a.mu is held.
func (a *Agent) describe(kind bootstrap.Kind, now time.Time) string {
	s := a.state(kind)
	prefix := ""
	if kind == bootstrap.Client {
		prefix = "client "
	}
	switch {
	case s.waitingCSR != "" && kind == bootstrap.Serving:
		return fmt.Sprintf("waiting for approval of %s (kubectl certificate approve %s)", s.waitingCSR, s.waitingCSR)
	case s.waitingCSR != "":
		return fmt.Sprintf("%swaiting for %s to be approved and issued (kubectl certificate approve %s)", prefix, s.waitingCSR, s.waitingCSR)
	case errors.Is(s.lastErr, bootstrap.ErrNoCredentials):
		return fmt.Sprintf("waiting for a bootstrap kubeconfig at %s (no valid %s)", a.cfg.BootstrapKubeconfig, a.cfg.Kubeconfig)
	case errors.Is(s.lastErr, errNeedClient):
		return "waiting for the client certificate"
	case s.lastErr != nil:
		valid := ""
		if now.Before(s.notAfter) {
			valid = fmt.Sprintf("valid until %s, ", s.notAfter.UTC().Format(time.DateOnly))
		}
		return fmt.Sprintf("%s%sretry in %s after: %s", prefix, valid, sinceRound(s.retryAt.Sub(now)), firstLine(s.lastErr.Error(), 160))
	case s.notAfter.IsZero():
		return prefix + "starting"
	case !now.Before(s.notAfter):
		return fmt.Sprintf("%sexpired at %s", prefix, s.notAfter.UTC().Format(time.RFC3339))
	}
	renew := "renewal due now"
	if d := s.deadline.Sub(now); d > 0 {
		renew = "renews in " + sinceRound(d)
	}
	return fmt.Sprintf("%svalid until %s (%s)", prefix, s.notAfter.UTC().Format(time.DateOnly), renew)
}

func firstLine(s string, max int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
