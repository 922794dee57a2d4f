package bootstrap

import (
	"context"
	"fmt"
	"path/filepath"
)

// KubeletReady reports whether a kubelet can start on the files now:
// kubelet.conf holds a client certificate that is valid now and that the API
// server accepts and, with serving, a usable serving certificate is in place
// (our key, this node, the wanted names, valid now, from the cluster's CA), so
// the kubelet never starts without one. It returns what is missing, or nil.
//
// As READY (docs/status.md), it does not hold a kubelet back because the API
// server cannot be reached at all: on a control-plane node the kubelet may be
// what runs it. Then unconfirmed says why the credential was not confirmed.
func (b *Bootstrapper) KubeletReady(ctx context.Context, serving bool) (unconfirmed error, missing error) {
	node, err := b.LoadNode()
	if err != nil {
		return nil, fmt.Errorf("no valid client certificate in %s: %w", b.cfg.KubeconfigPath, err)
	}
	if serving && b.storedUsable(Serving, node.Config) == nil {
		return nil, fmt.Errorf("no valid serving certificate for this node in %s%s",
			filepath.Join(b.cfg.CertDir, Serving.FilePrefix()+"-current.pem"), b.awaitingApproval(Serving))
	}
	if err := b.prove(ctx, node); err != nil {
		if rejectsCredential(err) || !IsTransient(err) {
			return nil, err
		}
		return err, nil
	}
	return nil, nil
}

// awaitingApproval names the CSR that the pending key of kind belongs to and
// the command that approves it ("; waiting for approval of node-csr-…
// (kubectl certificate approve node-csr-…)"), or "" with no pending key. The
// name derives from the key (Request.CSRName), so it is known from the disk
// alone: a kubelet held back by certagent wait, and the kubeadm join waiting
// for that kubelet, point at the one request to approve.
func (b *Bootstrapper) awaitingApproval(kind Kind) string {
	key, err := LoadPendingKey(b.cfg.CertDir, kind)
	if err != nil || key == nil {
		return ""
	}
	name, err := b.request(kind).CSRName(key.Public())
	if err != nil {
		return ""
	}
	return fmt.Sprintf("; waiting for approval of %s (kubectl certificate approve %s)", name, name)
}
