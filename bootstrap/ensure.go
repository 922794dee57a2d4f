package bootstrap

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"github.com/certagent/certagent/internal/failpoint"
)

// StepResult is what an Ensure step left in place.
type StepResult struct {
	// Leaf is the certificate in place afterwards; nil if there is none.
	Leaf *x509.Certificate
	// Stored: this step stored a new certificate.
	Stored bool
}

// ErrNeedClient: the serving certificate waits for a client certificate that
// the API server accepts.
var ErrNeedClient = errors.New("waiting for a client certificate the API server accepts")

// EnsureClient makes sure kubelet.conf holds a client certificate that the
// API server accepts, and renews it (with the node's own identity) when renew
// is set. It bootstraps from the bootstrap kubeconfig when kubelet.conf is
// missing, expired or unreadable, and when the API server rejects it (a
// rebuilt cluster, a replaced CA) and a bootstrap kubeconfig has been dropped
// in place. A bootstrap kubeconfig left next to a working kubelet.conf is
// deleted.
func (b *Bootstrapper) EnsureClient(ctx context.Context, renew bool) (StepResult, error) {
	defer b.settle(ctx, Client)
	node, err := b.LoadNode()
	if err != nil {
		b.setIdentity(node, err)
		return b.bootstrap(ctx, err)
	}
	if renew {
		out, err := b.renewClient(ctx, node)
		if err != nil && rejectsCredential(err) {
			b.setIdentity(node, err)
			return b.afterRejection(ctx, err)
		}
		return out, err
	}
	if _, err := os.Lstat(b.cfg.BootstrapKubeconfigPath); err == nil {
		// Someone dropped a bootstrap kubeconfig beside a kubelet.conf: ask
		// the API server afresh before deleting the token (the cluster may
		// have been rebuilt since kubelet.conf was last accepted).
		b.forget()
	}
	if err := b.prove(ctx, node); err != nil {
		if rejectsCredential(err) {
			return b.afterRejection(ctx, err)
		}
		return StepResult{Leaf: node.Leaf}, err
	}
	b.removeBootstrapIfPresent()
	return StepResult{Leaf: node.Leaf}, nil
}

// afterRejection starts over with a credential source if there is one (a
// bootstrap kubeconfig dropped in place, or attestation), and otherwise
// says what to do.
func (b *Bootstrapper) afterRejection(ctx context.Context, rejection error) (StepResult, error) {
	_, err := os.Stat(b.cfg.BootstrapKubeconfigPath)
	if err == nil || b.cfg.Attestation != nil {
		b.log.Warn("the API server rejects kubelet.conf; bootstrapping again", zap.Error(rejection))
		return b.bootstrap(ctx, rejection)
	}
	return StepResult{}, fmt.Errorf("%w: %v", ErrIdentityRejected, rejection)
}

// bootstrap obtains the client certificate from the first credential
// source that gives one (reason says why kubelet.conf will not do), writes
// kubelet.conf, proves it works and deletes the bootstrap kubeconfig.
func (b *Bootstrapper) bootstrap(ctx context.Context, reason error) (StepResult, error) {
	if errors.Is(reason, os.ErrNotExist) {
		reason = fmt.Errorf("%s does not exist", b.cfg.KubeconfigPath)
	}
	var failed []error
	for _, next := range b.sources() {
		src, err := next()
		if errors.Is(err, errNoSource) {
			continue
		}
		if err == nil {
			var out StepResult
			if out, err = b.bootstrapWith(ctx, reason, src); err == nil || out.Stored {
				return out, err // a stored certificate is finished with, whatever happens next
			}
		}
		if len(failed) == 0 && len(b.sources()) > 1 {
			b.log.Warn("a credential source failed; trying the next", zap.Error(err))
		}
		failed = append(failed, err)
	}
	if len(failed) == 0 {
		return StepResult{}, fmt.Errorf("%w: %w, and there is no bootstrap kubeconfig at %s: write a bootstrap-token kubeconfig there (see the README)", ErrNoCredentials, reason, b.cfg.BootstrapKubeconfigPath)
	}
	return StepResult{}, mostHopeful(failed)
}

// bootstrapWith obtains the client certificate from src, writes kubelet.conf,
// proves it works and deletes the bootstrap kubeconfig.
func (b *Bootstrapper) bootstrapWith(ctx context.Context, reason error, src *source) (StepResult, error) {
	b.log.Info("bootstrapping the client certificate", zap.String("reason", reason.Error()),
		zap.String("source", src.name), zap.String("with", src.cred.Path), zap.String("server", src.cred.Config.Host))
	var out StepResult
	// A certificate the API server refused is not used again.
	if leaf := b.storedUsable(Client, src.cred.Config); leaf != nil && !rejectsCredential(reason) {
		// A bootstrap interrupted after storing the certificate: finish it
		// with that certificate instead of asking for another.
		b.log.Info("finishing an interrupted bootstrap with the client certificate already stored", zap.String("path", CurrentPath(b.cfg.CertDir, Client)))
		out.Leaf = leaf
	} else {
		leaf, err := b.obtainCertificate(ctx, Client, src.cred)
		if err != nil {
			return StepResult{}, err
		}
		out = StepResult{Leaf: leaf, Stored: true}
		b.recordSource(src.name)
	}
	// Only now: kubelet.conf must never reference a certificate that a crash
	// could lose. It carries the source's connection settings.
	if err := b.writeKubeletKubeconfig(src.cluster); err != nil {
		return out, err
	}
	failpoint.Inject("client.kubeconfig-written")
	// The proof that lets the bootstrap kubeconfig go is made with
	// kubelet.conf as the kubelet will read it from disk, and nothing else:
	// not the bootstrap kubeconfig's connection.
	node, err := b.LoadNode()
	if err != nil {
		return out, fmt.Errorf("reading back %s: %w", b.cfg.KubeconfigPath, err)
	}
	if err := b.prove(ctx, node); err != nil {
		return out, fmt.Errorf("%s was written but does not work yet, so the bootstrap kubeconfig is kept: %w", b.cfg.KubeconfigPath, err)
	}
	b.log.Info("kubelet.conf works", zap.String("kubeconfig", b.cfg.KubeconfigPath), zap.String("user", "system:node:"+b.cfg.NodeName), zap.String("source", src.name))
	failpoint.Inject("client.proven")
	if src.cred.Bootstrap {
		return out, b.removeBootstrap()
	}
	b.removeBootstrapIfPresent()
	return out, nil
}

// renewClient renews a valid client certificate with the node's own identity
// and, if kubelet.conf does not yet reference the current link (say kubeadm
// wrote it with an embedded certificate), rewrites it to do so; then it
// proves that the renewed kubelet.conf is accepted.
func (b *Bootstrapper) renewClient(ctx context.Context, node *Node) (StepResult, error) {
	leaf, err := b.Obtain(ctx, Client, node.credential(b.cfg.KubeconfigPath))
	if err != nil {
		return StepResult{Leaf: node.Leaf}, err
	}
	out := StepResult{Leaf: leaf, Stored: true}
	b.recordSource(SourceRenewal)
	current := CurrentPath(b.cfg.CertDir, Client)
	if node.Config.CertFile != current || node.Config.KeyFile != current {
		b.log.Info("rewriting kubelet.conf to reference the renewed certificate", zap.String("kubeconfig", b.cfg.KubeconfigPath))
		if err := b.writeKubeletKubeconfig(node.Cluster); err != nil {
			return out, err
		}
	}
	renewed, err := b.LoadNode()
	if err != nil {
		return out, fmt.Errorf("reading back %s: %w", b.cfg.KubeconfigPath, err)
	}
	return out, b.prove(ctx, renewed)
}

// removeBootstrapIfPresent deletes a bootstrap kubeconfig lying next to a
// kubelet.conf that was just proven to work (a crash between proving and
// deleting, or a token dropped on a healthy node). Failures are logged: the
// node works either way.
func (b *Bootstrapper) removeBootstrapIfPresent() {
	if _, err := os.Lstat(b.cfg.BootstrapKubeconfigPath); err != nil {
		return
	}
	if err := b.removeBootstrap(); err != nil {
		b.log.Warn("removing the bootstrap kubeconfig", zap.Error(err))
	}
}

// removeBootstrap deletes the bootstrap kubeconfig, the file it points to
// if it is a symlink, and the token file it names if it names one (a
// regular file): the token must not stay on disk.
func (b *Bootstrapper) removeBootstrap() error {
	path := b.cfg.BootstrapKubeconfigPath
	// First the token file it names, if any: a crash in between leaves the
	// kubeconfig, whose removal is redone at the next start.
	if tf := kubeconfig.TokenFile(path); tf != "" {
		if ti, err := os.Lstat(tf); err == nil && ti.Mode().IsRegular() {
			if err := os.Remove(tf); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing %s, the token file of the bootstrap kubeconfig %s: %w", tf, path, err)
			}
			b.log.Info("removed the bootstrap kubeconfig's token file", zap.String("path", tf))
		}
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			if ti, err := os.Lstat(target); err == nil && ti.Mode().IsRegular() {
				if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("removing %s, the bootstrap kubeconfig %s links to: %w", target, path, err)
				}
				b.log.Info("removed the file the bootstrap kubeconfig links to", zap.String("path", target))
			}
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing bootstrap kubeconfig: %w", err)
	}
	b.log.Info("removed the bootstrap kubeconfig", zap.String("path", path))
	if b.cfg.OnBootstrapRemoved != nil {
		b.cfg.OnBootstrapRemoved(path)
	}
	// No directory fsync: kubelet.conf is already durable, and a removal lost
	// in a crash is redone at the next start.
	return nil
}

// AcceptedNode returns kubelet.conf if its client certificate is valid and
// the API server accepted it as it is on disk now; ErrNeedClient otherwise.
func (b *Bootstrapper) AcceptedNode() (*Node, error) {
	node, err := b.LoadNode()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNeedClient, err)
	}
	if !b.accepted(node) {
		return nil, ErrNeedClient
	}
	return node, nil
}

// EnsureServing makes sure a valid serving certificate covering the wanted
// SANs is stored, requesting one with the node's identity if not, or even so
// when renew is set. It needs a client certificate the API server accepts
// (ErrNeedClient otherwise).
func (b *Bootstrapper) EnsureServing(ctx context.Context, renew bool) (StepResult, error) {
	defer b.settle(ctx, Serving)
	cur, _ := CurrentLeaf(b.cfg.CertDir, Serving) // what is in place, for the outcome
	node, err := b.AcceptedNode()
	if err != nil {
		return StepResult{Leaf: cur}, err
	}
	if !renew && cur != nil {
		if ok := b.storedUsable(Serving, node.Config); ok != nil {
			return StepResult{Leaf: ok}, nil
		}
	}
	leaf, err := b.Obtain(ctx, Serving, node.credential(b.cfg.KubeconfigPath))
	if err != nil {
		if rejectsCredential(err) {
			b.setIdentity(node, err)
			return StepResult{Leaf: cur}, fmt.Errorf("%w: %v", ErrNeedClient, err)
		}
		return StepResult{Leaf: cur}, err
	}
	return StepResult{Leaf: leaf, Stored: true}, nil
}
