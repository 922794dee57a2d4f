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
		return nil, fmt.Errorf("no valid serving certificate for this node in %s", filepath.Join(b.cfg.CertDir, Serving.FilePrefix()+"-current.pem"))
	}
	if err := b.prove(ctx, node); err != nil {
		if rejectsCredential(err) || !IsTransient(err) {
			return nil, err
		}
		return err, nil
	}
	return nil, nil
}
