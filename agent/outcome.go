package agent

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/nodefault"
	"github.com/certagent/certagent/rotate"
)

// noteCertificate records the stored certificate of kind.
func (a *Agent) noteCertificate(kind bootstrap.Kind, c rotate.Cert) {
	deadline := a.renewalPolicy().NextRenewal(c)
	a.certs.Update(kind, func(s *observe.Cert) { s.NotAfter, s.Deadline = c.NotAfter, deadline })
}

// observe records a step's outcome (rotate.LoopConfig.Observe): the state,
// the log, the STATUS line, an Event, READY.
func (a *Agent) observe(kind bootstrap.Kind, o rotate.Outcome) {
	now := a.clock.Now()
	repeatedFault := a.logOutcome(kind, o)
	a.certs.Update(kind, func(s *observe.Cert) {
		s.Class = o.Class
		if o.Stored {
			s.LastSuccess = now
		}
		switch o.Class {
		case rotate.Done:
			s.LastErr, s.WaitingCSR = nil, ""
			s.Deadline = o.Next
		case rotate.Blocked:
			s.LastErr, s.WaitingCSR = o.Err, ""
			if errors.Is(o.Err, bootstrap.ErrNoCredentials) {
				s.NotAfter, s.Deadline = time.Time{}, time.Time{} // no usable certificate
			}
		default:
			s.LastErr, s.RetryAt, s.WaitingCSR = o.Err, o.Next, ""
			s.Errors++
			if observe.IsDenied(o.Err) {
				s.Denied++
			}
		}
	})
	a.publishStatus()
	removed := ""
	if kind == bootstrap.Client {
		a.mu.Lock()
		removed, a.bootstrapRemoved = a.bootstrapRemoved, ""
		a.mu.Unlock()
	}
	a.events.Outcome(kind, o, repeatedFault, removed, a.certs.Get(kind).SignedBy())
	if kind == bootstrap.Client {
		a.markReadyIf(o)
	}
	if o.Next.Sub(now) >= time.Minute {
		a.idle.settled() // nothing to do for a while
	}
}

// logOutcome logs what a person should hear of a step's outcome, and
// reports whether it is a retry that failed as the last one did for a fault
// of the node (a full disk), which comes every few seconds: told once, when
// it begins or changes, its retries only at debug level.
func (a *Agent) logOutcome(kind bootstrap.Kind, o rotate.Outcome) (repeatedFault bool) {
	log := a.log.With(zap.String("certificate", string(kind)))
	var blockedBefore, faultBefore string
	if s := a.certs.Get(kind); s.Class == rotate.Blocked && s.LastErr != nil {
		blockedBefore = s.LastErr.Error()
	} else if s.Class == rotate.NodeFault {
		faultBefore = observe.FaultOf(s.LastErr)
	}
	faultNow := observe.FaultOf(o.Err)
	repeatedFault = o.Class == rotate.NodeFault && faultNow == faultBefore
	switch {
	case o.Class == rotate.Blocked && o.Err.Error() != blockedBefore:
		log.Info("waiting", zap.Error(o.Err))
	case o.Class == rotate.Transient || o.Class == rotate.NeedsPerson:
		log.Warn("attempt failed", zap.Error(o.Err), zap.Time("retry_at", o.Next), zap.Int("failures", o.Failure),
			zap.Bool("needs_a_person", o.Class == rotate.NeedsPerson))
	case o.Class == rotate.NodeFault && !repeatedFault:
		f, _ := nodefault.Of(o.Err)
		log.Warn("waiting for the node", zap.String("condition", faultNow), zap.String("what_to_do", f.Advice()),
			zap.Duration("retrying_every_at_most", rotate.NodeFaultBackoff.Longest()), zap.Time("retry_at", o.Next), zap.Error(o.Err))
	case o.Class == rotate.NodeFault:
		log.Debug("attempt failed", zap.Error(o.Err), zap.Time("retry_at", o.Next), zap.Int("failures", o.Failure))
	}
	if faultBefore != "" && o.Class != rotate.NodeFault {
		log.Info("no longer waiting for the node", zap.String("condition", faultBefore))
	}
	return repeatedFault
}

// markReadyIf sends READY=1 the first time kubelet.conf is accepted by the
// API server; and also when the API server cannot be reached at all while
// kubelet.conf holds a valid certificate it has not rejected, so that a
// kubelet whose node runs the API server itself (a control-plane node's
// static pod) is not held back by the very outage it would end.
func (a *Agent) markReadyIf(o rotate.Outcome) {
	id := a.certs.Identity()
	now := a.clock.Now()
	valid := o.Cert.Known() && now.Before(o.Cert.NotAfter)
	ok := (o.Class == rotate.Done && id.Accepted) || (o.Class == rotate.Transient && valid && !id.Rejected)
	a.mu.Lock()
	first := ok && !a.ready
	if first {
		a.ready = true
		close(a.readyCh)
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

// statusLine is the STATUS line for the agent's state now.
func (a *Agent) statusLine() string { return a.certs.StatusLine(a.Config(), a.clock.Now()) }

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
