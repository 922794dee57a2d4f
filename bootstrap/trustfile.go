package bootstrap

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/internal/atomicfile"
)

// withTrustFile is cluster with its CA kept in the file TrustCAFile (the CA
// of cluster written there first, unless cluster already names it), so that
// kubelet.conf names the file the agent keeps in step with the cluster's
// published trust. Without TrustCAFile, or without a CA (system roots), it
// is cluster itself.
func (b *Bootstrapper) withTrustFile(cluster *clientcmdapi.Cluster) (*clientcmdapi.Cluster, error) {
	path := b.cfg.TrustCAFile
	if path == "" || (cluster.CertificateAuthority == path && len(cluster.CertificateAuthorityData) == 0) {
		return cluster, nil
	}
	data := cluster.CertificateAuthorityData
	if len(data) == 0 && cluster.CertificateAuthority != "" {
		var err error
		if data, err = os.ReadFile(cluster.CertificateAuthority); err != nil {
			return nil, fmt.Errorf("reading the cluster CA for %s: %w", path, err)
		}
	}
	if len(data) == 0 {
		return cluster, nil
	}
	if _, err := ParseCertificates(data); err != nil {
		return nil, fmt.Errorf("the cluster CA for %s: %w", path, err)
	}
	if err := atomicfile.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return nil, fmt.Errorf("writing the cluster CA %s: %w", path, err)
	}
	out := *cluster
	out.CertificateAuthority, out.CertificateAuthorityData = path, nil
	return &out, nil
}

// UseTrustFile rewrites kubelet.conf, if it embeds its CA or names another
// file, to name TrustCAFile (written with that CA first), and proves that it
// still works. A node set up before trust.follow was turned on is moved over
// so.
func (b *Bootstrapper) UseTrustFile(ctx context.Context) error {
	node, err := b.LoadNode()
	if err != nil {
		return err
	}
	c := node.Cluster
	if b.cfg.TrustCAFile == "" || (c.CertificateAuthority == b.cfg.TrustCAFile && len(c.CertificateAuthorityData) == 0) {
		return nil
	}
	b.log.Info("kubelet.conf now names the CA file certagent keeps", zap.String("kubeconfig", b.cfg.KubeconfigPath), zap.String("ca_file", b.cfg.TrustCAFile))
	if err := b.writeKubeletKubeconfig(c); err != nil {
		return err
	}
	moved, err := b.LoadNode()
	if err != nil {
		return fmt.Errorf("reading back %s: %w", b.cfg.KubeconfigPath, err)
	}
	return b.prove(ctx, moved)
}

// NodeAPI is the API as kubelet.conf reaches it now.
func (b *Bootstrapper) NodeAPI() (*apiclient.API, error) {
	node, err := b.LoadNode()
	if err != nil {
		return nil, fmt.Errorf("no node credential: %w", err)
	}
	return b.cfg.Clients.ForNode(node.Config)
}
