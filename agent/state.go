package agent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

// certState is what the agent knows about one of the two certificates; it
// feeds the systemd STATUS line and the metrics.
type certState struct {
	notAfter    time.Time // of the stored certificate; zero if none
	deadline    time.Time // when it is renewed (rotate.Policy.NextRenewal)
	waitingCSR  string    // CSR being waited on, if any
	lastErr     error     // last failure, cleared by a success
	class       rotate.Class
	retryAt     time.Time // when the next attempt after lastErr is due
	attempts    uint64    // requests made (bootstrap or renewal)
	errors      uint64    // failed attempts
	denied      uint64    // CSRs of ours that were denied
	lastSuccess time.Time // last time a certificate was stored
	hookErrors  uint64
}

// waitingFor is the CSR kind's step waits on, "" if none.
func (a *Agent) waitingFor(kind bootstrap.Kind) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state(kind).waitingCSR
}

func (a *Agent) state(kind bootstrap.Kind) *certState {
	if s, ok := a.states[kind]; ok {
		return s
	}
	s := &certState{}
	a.states[kind] = s
	return s
}

// update changes kind's state; the STATUS line is published by the callers
// that end a step (observe), a wait or an identity change.
func (a *Agent) update(kind bootstrap.Kind, f func(*certState)) {
	a.mu.Lock()
	f(a.state(kind))
	a.mu.Unlock()
}

// noteCertificate records the stored certificate of kind.
func (a *Agent) noteCertificate(kind bootstrap.Kind, c rotate.Cert) {
	deadline := a.renewalPolicy().NextRenewal(c)
	a.update(kind, func(s *certState) { s.notAfter, s.deadline = c.NotAfter, deadline })
}

// observe records a step's outcome (rotate.LoopConfig.Observe) and logs
// what a person should hear of it.
func (a *Agent) observe(kind bootstrap.Kind, o rotate.Outcome) {
	now := a.clock.Now()
	log := a.log.With(zap.String("certificate", string(kind)))
	var blockedBefore, faultBefore string
	a.mu.Lock()
	if s := a.state(kind); s.class == rotate.Blocked && s.lastErr != nil {
		blockedBefore = s.lastErr.Error()
	} else if s.class == rotate.NodeFault {
		faultBefore = nodeFaultOf(s.lastErr)
	}
	a.mu.Unlock()
	// A fault of the node (a full disk) is retried every few seconds: it is
	// told once, when it begins or changes, and its retries only at debug.
	faultNow := nodeFaultOf(o.Err)
	repeatedFault := o.Class == rotate.NodeFault && faultNow == faultBefore
	switch {
	case o.Class == rotate.Blocked && o.Err.Error() != blockedBefore:
		log.Info("waiting", zap.Error(o.Err))
	case o.Class == rotate.Transient || o.Class == rotate.NeedsPerson:
		log.Warn("attempt failed", zap.Error(o.Err), zap.Time("retry_at", o.Next), zap.Int("failures", o.Failure),
			zap.Bool("needs_a_person", o.Class == rotate.NeedsPerson))
	case o.Class == rotate.NodeFault && !repeatedFault:
		f, _ := bootstrap.NodeFaultOf(o.Err)
		log.Warn("waiting for the node", zap.String("condition", faultNow), zap.String("what_to_do", f.Advice()),
			zap.Duration("retrying_every_at_most", rotate.NodeFaultBackoff.Longest()), zap.Time("retry_at", o.Next), zap.Error(o.Err))
	case o.Class == rotate.NodeFault:
		log.Debug("attempt failed", zap.Error(o.Err), zap.Time("retry_at", o.Next), zap.Int("failures", o.Failure))
	}
	if faultBefore != "" && o.Class != rotate.NodeFault {
		log.Info("no longer waiting for the node", zap.String("condition", faultBefore))
	}
	a.update(kind, func(s *certState) {
		s.class = o.Class
		if o.Stored {
			s.lastSuccess = now
		}
		switch o.Class {
		case rotate.Done:
			s.lastErr, s.waitingCSR = nil, ""
			s.deadline = o.Next
		case rotate.Blocked:
			s.lastErr, s.waitingCSR = o.Err, ""
			if errors.Is(o.Err, bootstrap.ErrNoCredentials) {
				s.notAfter, s.deadline = time.Time{}, time.Time{} // no usable certificate
			}
		default:
			s.lastErr, s.retryAt, s.waitingCSR = o.Err, o.Next, ""
			s.errors++
			if isDenied(o.Err) {
				s.denied++
			}
		}
	})
	a.publishStatus()
	a.recordOutcome(kind, o, repeatedFault)
	if kind == bootstrap.Client {
		a.markReadyIf(o)
	}
	if o.Next.Sub(now) >= time.Minute {
		a.idle.settled() // nothing to do for a while
	}
}

// recordOutcome turns a step's outcome into an Event on the Node, if it is
// one a person should see from kubectl: not a retry that failed as the last
// one did for a fault of the node (repeatedFault), which comes every few
// seconds.
func (a *Agent) recordOutcome(kind bootstrap.Kind, o rotate.Outcome, repeatedFault bool) {
	name := certName(kind)
	removed := ""
	if kind == bootstrap.Client {
		a.mu.Lock()
		removed, a.bootstrapRemoved = a.bootstrapRemoved, ""
		a.mu.Unlock()
	}
	removedNote := fmt.Sprintf("removed the bootstrap kubeconfig %s: kubelet.conf is proven to work", removed)
	switch {
	case o.Class == rotate.Done && o.Stored:
		reason, action := ReasonCertificateIssued, "Issue"
		if o.Renew {
			reason, action = ReasonCertificateRenewed, "Renew"
		}
		note := fmt.Sprintf("%s certificate stored; valid until %s, renewal due %s", name, stamp(o.Cert.NotAfter), stamp(o.Next))
		if removed != "" {
			note += "; " + removedNote // one write for the whole bootstrap
			removed = ""
		}
		a.events.record(nodeEvent{typ: corev1.EventTypeNormal, reason: reason, action: action, kind: kind, note: note})
	case isDenied(o.Err):
		a.events.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonCSRDenied, action: "RequestCertificate", kind: kind,
			note: fmt.Sprintf("%s certificate: %v", name, o.Err)})
	case o.Class == rotate.Transient || o.Class == rotate.NeedsPerson || (o.Class == rotate.NodeFault && !repeatedFault):
		a.events.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonRenewalFailing, action: "RequestCertificate", kind: kind,
			note: fmt.Sprintf("%s certificate: attempt %d failed, next at %s: %v", name, o.Failure, stamp(o.Next), o.Err)})
	}
	if removed != "" {
		a.events.record(nodeEvent{typ: corev1.EventTypeNormal, reason: ReasonBootstrapRemoved, action: "Cleanup", note: removedNote})
	}
}

// markReadyIf sends READY=1 the first time kubelet.conf is accepted by the
// API server; and also when the API server cannot be reached at all while
// kubelet.conf holds a valid certificate it has not rejected, so that a
// kubelet whose node runs the API server itself (a control-plane node's
// static pod) is not held back by the very outage it would end.
func (a *Agent) markReadyIf(o rotate.Outcome) {
	a.mu.Lock()
	id := a.identity
	now := a.clock.Now()
	valid := o.Cert.Known() && now.Before(o.Cert.NotAfter)
	ok := (o.Class == rotate.Done && id.Accepted) || (o.Class == rotate.Transient && valid && !id.Rejected)
	first := ok && !a.ready
	if first {
		a.ready = true
	}
	a.mu.Unlock()
	if !first {
		return
	}
	if id.Accepted {
		a.log.Info("ready: the API server accepts kubelet.conf")
	} else {
		a.log.Warn("ready without confirmation: kubelet.conf holds a valid client certificate, but the API server cannot be reached to confirm it")
	}
	a.notifier.Ready()
}

// statusLine is the one line systemd shows: what the agent is doing, in terms
// a person can act on. Times are absolute (UTC), so the line stays true
// between updates.
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

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// describe renders one certificate's state; a.mu is held.
func (a *Agent) describe(kind bootstrap.Kind, now time.Time) string {
	s := a.state(kind)
	prefix := ""
	if kind == bootstrap.Client {
		prefix = "client "
	}
	valid := ""
	if !s.notAfter.IsZero() && now.Before(s.notAfter) {
		valid = "valid until " + stamp(s.notAfter) + ", "
	}
	var other *bootstrap.OtherNodeError
	switch {
	case s.waitingCSR != "" && kind == bootstrap.Serving:
		return fmt.Sprintf("waiting for approval of %s (kubectl certificate approve %s)", s.waitingCSR, s.waitingCSR)
	case s.waitingCSR != "":
		return fmt.Sprintf("%swaiting for %s to be approved and issued (kubectl certificate approve %s)", prefix, s.waitingCSR, s.waitingCSR)
	case errors.As(s.lastErr, &other):
		keep := ""
		if old := other.OldName(); old != "" {
			keep = ", or set nodeName: " + old
		}
		return fmt.Sprintf("%s is %s's, not this node's (%s): drop a bootstrap kubeconfig at %s to bootstrap as this node%s",
			a.cfg.Kubeconfig, other.User, other.Want, a.cfg.BootstrapKubeconfig, keep)
	case errors.Is(s.lastErr, bootstrap.ErrNoCredentials):
		return fmt.Sprintf("waiting for a bootstrap kubeconfig at %s (no valid %s)", a.cfg.BootstrapKubeconfig, a.cfg.Kubeconfig)
	case errors.Is(s.lastErr, bootstrap.ErrIdentityRejected):
		return fmt.Sprintf("%srejected by the API server (%s); drop a bootstrap kubeconfig at %s to bootstrap again", prefix, firstLine(causeOf(a.identity.Err), 120), a.cfg.BootstrapKubeconfig)
	case errors.Is(s.lastErr, bootstrap.ErrNeedClient):
		return "waiting for a client certificate the API server accepts"
	case s.class == rotate.NodeFault && s.lastErr != nil:
		f, _ := bootstrap.NodeFaultOf(s.lastErr)
		return fmt.Sprintf("%s%s%s: retrying every %s at most (next %s); %s", prefix, valid, f, rotate.NodeFaultBackoff.Longest(),
			s.retryAt.UTC().Format("15:04:05Z"), f.Advice())
	case s.lastErr != nil:
		return fmt.Sprintf("%s%sretrying at %s after: %s", prefix, valid, s.retryAt.UTC().Format("15:04:05Z"), firstLine(s.lastErr.Error(), 160))
	case s.notAfter.IsZero():
		return prefix + "starting"
	case !now.Before(s.notAfter):
		return fmt.Sprintf("%sexpired at %s", prefix, s.notAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%svalid until %s, renews %s", prefix, stamp(s.notAfter), stamp(s.deadline))
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

// publishStatus sends the STATUS line if it changed.
func (a *Agent) publishStatus() {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	line := a.statusLine()
	a.mu.Lock()
	changed := line != a.status
	a.status = line
	a.mu.Unlock()
	if changed {
		a.notifier.Status(line)
	}
}

// nodeFaultOf describes err's fault of the node, "" if it is none.
func nodeFaultOf(err error) string {
	if f, ok := bootstrap.NodeFaultOf(err); ok {
		return f.String()
	}
	return ""
}

// isDenied: err is a CSR of ours that was denied.
func isDenied(err error) bool {
	var ce *bootstrap.CSRError
	return errors.As(err, &ce) && ce.Outcome == bootstrap.OutcomeDenied
}
