package observe

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/nodefault"
	"github.com/certagent/certagent/rotate"
)

// Cert is what the daemon knows about one of the two certificates.
type Cert struct {
	NotAfter   time.Time // of the stored certificate; zero if none
	Deadline   time.Time // when it is renewed (rotate.Policy.NextRenewal)
	WaitingCSR string    // CSR being waited on, if any
	// Unreported are the names the waiting serving CSR asks for that the
	// Node does not report, in plain words (an approver checking the Node
	// refuses them).
	Unreported  []string
	LastErr     error // last failure, cleared by a success
	Class       rotate.Class
	RetryAt     time.Time // when the next attempt after LastErr is due
	Attempts    uint64    // requests made (bootstrap or renewal)
	Errors      uint64    // failed attempts
	Denied      uint64    // CSRs of ours that were denied
	LastSuccess time.Time // last time a certificate was stored
	HookErrors  uint64
	// CA and CASHA name the CA that signed the stored certificate (its
	// common name, and trust.Fingerprint or "" when the node does not know
	// that CA).
	CA, CASHA string
}

// SignedBy names the CA of the stored certificate for people: its common
// name and fingerprint, or its issuer's name alone; "" if unknown.
func (s Cert) SignedBy() string {
	switch {
	case s.CASHA != "":
		return fmt.Sprintf("%q (sha256 %s)", s.CA, s.CASHA)
	case s.CA != "":
		return fmt.Sprintf("%q", s.CA)
	}
	return ""
}

// Certs is what the daemon knows about its two certificates and about
// kubelet.conf; the STATUS line and the metrics are made of it. It is safe
// for concurrent use, and calls nothing while it holds its lock.
type Certs struct {
	mu       sync.Mutex
	certs    map[bootstrap.Kind]*Cert
	identity bootstrap.Identity // what the API server thinks of kubelet.conf
	trust    TrustState
}

// NewCerts knows nothing yet.
func NewCerts() *Certs { return &Certs{certs: map[bootstrap.Kind]*Cert{}} }

// cert is kind's state; c.mu is held.
func (c *Certs) cert(kind bootstrap.Kind) *Cert {
	if s, ok := c.certs[kind]; ok {
		return s
	}
	s := &Cert{}
	c.certs[kind] = s
	return s
}

// Update changes kind's state.
func (c *Certs) Update(kind bootstrap.Kind, f func(*Cert)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c.cert(kind))
}

// Get is a copy of kind's state.
func (c *Certs) Get(kind bootstrap.Kind) Cert {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.cert(kind)
}

// WaitingFor is the CSR kind's step waits on, "" if none.
func (c *Certs) WaitingFor(kind bootstrap.Kind) string { return c.Get(kind).WaitingCSR }

// SetIdentity records what the API server thinks of kubelet.conf.
func (c *Certs) SetIdentity(id bootstrap.Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.identity = id
}

// Identity is what the API server thinks of kubelet.conf.
func (c *Certs) Identity() bootstrap.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identity
}

// StatusLine is the one line systemd shows: what the daemon is doing, in
// terms a person can act on. Times are absolute (UTC), so the line stays
// true between updates.
func (c *Certs) StatusLine(cfg config.Config, now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	parts := []string{c.describe(bootstrap.Client, cfg, now)}
	if cfg.ServingEnabled() {
		parts = append(parts, "serving: "+c.describe(bootstrap.Serving, cfg, now))
	}
	return strings.Join(parts, "; ")
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// describe renders one certificate's state; c.mu is held.
func (c *Certs) describe(kind bootstrap.Kind, cfg config.Config, now time.Time) string {
	s := c.cert(kind)
	prefix := ""
	if kind == bootstrap.Client {
		prefix = "client "
	}
	valid := ""
	if !s.NotAfter.IsZero() && now.Before(s.NotAfter) {
		valid = "valid until " + stamp(s.NotAfter) + ", "
	}
	var other *bootstrap.OtherNodeError
	switch {
	case s.WaitingCSR != "" && kind == bootstrap.Serving && len(s.Unreported) > 0:
		return fmt.Sprintf("waiting for approval of %s; an approver checking the Node will refuse it: %s", s.WaitingCSR, strings.Join(s.Unreported, "; "))
	case s.WaitingCSR != "" && kind == bootstrap.Serving:
		return fmt.Sprintf("waiting for approval of %s (kubectl certificate approve %s)", s.WaitingCSR, s.WaitingCSR)
	case s.WaitingCSR != "":
		return fmt.Sprintf("%swaiting for %s to be approved and issued (kubectl certificate approve %s)", prefix, s.WaitingCSR, s.WaitingCSR)
	case errors.As(s.LastErr, &other):
		keep := ""
		if old := other.OldName(); old != "" {
			keep = ", or set nodeName: " + old
		}
		return fmt.Sprintf("%s is %s's, not this node's (%s): drop a bootstrap kubeconfig at %s to bootstrap as this node%s",
			cfg.Kubeconfig, other.User, other.Want, cfg.BootstrapKubeconfig, keep)
	case errors.Is(s.LastErr, bootstrap.ErrNoCredentials):
		return fmt.Sprintf("waiting for a bootstrap kubeconfig at %s (no valid %s)", cfg.BootstrapKubeconfig, cfg.Kubeconfig)
	case errors.Is(s.LastErr, bootstrap.ErrIdentityRejected):
		return fmt.Sprintf("%srejected by the API server (%s); drop a bootstrap kubeconfig at %s to bootstrap again", prefix, firstLine(causeOf(c.identity.Err), 120), cfg.BootstrapKubeconfig)
	case errors.Is(s.LastErr, bootstrap.ErrNeedClient):
		return "waiting for a client certificate the API server accepts"
	case s.Class == rotate.NodeFault && s.LastErr != nil:
		f, _ := nodefault.Of(s.LastErr)
		return fmt.Sprintf("%s%s%s: retrying every %s at most (next %s); %s", prefix, valid, f, rotate.NodeFaultBackoff.Longest(),
			s.RetryAt.UTC().Format("15:04:05Z"), f.Advice())
	case s.LastErr != nil:
		return fmt.Sprintf("%s%sretrying at %s after: %s", prefix, valid, s.RetryAt.UTC().Format("15:04:05Z"), firstLine(s.LastErr.Error(), 160))
	case s.NotAfter.IsZero():
		return prefix + "starting"
	case !now.Before(s.NotAfter):
		return fmt.Sprintf("%sexpired at %s", prefix, s.NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%svalid until %s, renews %s", prefix, stamp(s.NotAfter), stamp(s.Deadline))
}

// causeOf shortens an identity error to what the server said.
func causeOf(err error) string {
	if err == nil {
		return "no reason given"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
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

// FaultOf describes err's fault of the node, "" if it is none.
func FaultOf(err error) string {
	if f, ok := nodefault.Of(err); ok {
		return f.String()
	}
	return ""
}

// IsDenied: err is a CSR of ours that was denied.
func IsDenied(err error) bool {
	var ce *bootstrap.CSRError
	return errors.As(err, &ce) && ce.Outcome == bootstrap.OutcomeDenied
}
