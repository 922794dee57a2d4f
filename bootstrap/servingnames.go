package bootstrap

import (
	"context"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/certagent/certagent/protocol/servingnames"
)

// checkServingNames looks, once the serving CSR waits for approval, whether
// the node's Node object reports every name the CSR asks for: an approver
// that checks the Node (certagent-cluster approve) refuses one it does not.
// It says so in the log and to OnServingNames; an error reading the Node
// (no permission, a timeout) only skips the look, at debug.
func (b *Bootstrapper) checkServingNames(ctx context.Context, cred Credential, req Request, csrName string, log *zap.Logger) {
	if b.cfg.OnServingNames == nil && !log.Core().Enabled(zap.WarnLevel) {
		return
	}
	read := b.cfg.NodeAddresses
	if read == nil && b.cfg.NewCSRClient != nil {
		return // a fake CSR API (tests) and no Node to read
	}
	if read == nil {
		read = func(ctx context.Context, cred Credential, name string) ([]corev1.NodeAddress, error) {
			api, err := b.cfg.Clients.ForNode(cred.Config)
			if err != nil {
				return nil, err
			}
			return api.NodeAddresses(ctx, name)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a look, not worth a long wait
	defer cancel()
	addrs, err := read(ctx, cred, req.NodeName)
	switch {
	case apierrors.IsNotFound(err):
		// A new node: the kubelet registers its Node, and a kubelet behind
		// certagent's drop-in (certagent wait) starts only once this
		// certificate is in place, so an approver that checks the Node waits
		// for a person. Said in the log only: every new node's first serving
		// CSR comes before its Node, whatever approves it, and a Warning
		// Event for each would be noise where an approver answers at once.
		log.Info("no Node yet to compare the serving names with: an approver that checks the Node (certagent-cluster approve) waits for the kubelet to register it, and a kubelet started by certagent wait waits for this certificate; approve this first CSR by hand",
			zap.String("approve", "kubectl certificate approve "+csrName))
		return
	case err != nil:
		log.Debug("could not read the Node to compare the serving names", zap.Error(err))
		return
	}
	unreported := servingnames.Unreported(req.NodeName, addrs, req.DNSNames, req.IPAddresses)
	if len(unreported) > 0 {
		log.Warn("the serving CSR asks for names the Node does not report: an approver that checks the Node will not approve it until it does",
			zap.Strings("unreported", unreported))
	}
	if b.cfg.OnServingNames != nil {
		b.cfg.OnServingNames(csrName, unreported)
	}
}
