package agent

import (
	"context"
	"errors"

	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/nodefault"
	"github.com/certagent/certagent/rotate"
)

// task adapts the bootstrap package's steps to rotate.Task: one certificate,
// the hooks once a step has left it on disk, and the facts the renewal
// decision needs.
type task struct {
	a    *Agent
	kind bootstrap.Kind
	// ctx is the root context: SIGTERM stops hooks too.
	ctx context.Context
}

// Step implements rotate.Task.
func (t task) Step(ctx context.Context, renew bool) (rotate.Result, error) {
	b := t.a.bootstrapper()
	var out bootstrap.StepResult
	var err error
	if t.kind == bootstrap.Client {
		out, err = b.EnsureClient(ctx, renew)
	} else {
		out, err = b.EnsureServing(ctx, renew)
	}
	cfg := t.a.Config()
	res := rotate.Result{Cert: observe.CertInfo(cfg.CertDir, t.kind, out.Leaf), Stored: out.Stored}
	if out.Leaf != nil {
		t.a.noteCertificate(t.kind, res.Cert)
		t.a.noteCA(t.kind, out.Leaf)
	}
	if err == nil {
		// The whole step is on disk (for the client: kubelet.conf written and
		// accepted): now the certificate's consumers may hear of it.
		t.a.runDueHooks(t.ctx, t.kind, out.Leaf)
	}
	return res, err
}

// classify sorts a step's error for the renewal loop.
func classify(err error) rotate.Class {
	switch {
	case err == nil:
		return rotate.Done
	case errors.Is(err, bootstrap.ErrNoCredentials), errors.Is(err, bootstrap.ErrNeedClient), errors.Is(err, bootstrap.ErrIdentityRejected), errors.Is(err, errServingOff):
		return rotate.Blocked // until a file is dropped or the client certificate is accepted
	case isNodeFault(err):
		return rotate.NodeFault // a full, read-only or failing disk: retried soon, no person needed
	case bootstrap.IsTransient(err):
		return rotate.Transient
	}
	return rotate.NeedsPerson
}

// isNodeFault: err is a fault of the node itself (nodefault.Of).
func isNodeFault(err error) bool {
	_, ok := nodefault.Of(err)
	return ok
}
