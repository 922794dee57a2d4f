package controlplane

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigCluster is the cluster name used in the kubeconfigs written here,
// as kubeadm names it.
const kubeconfigCluster = "kubernetes"

// clientCertKubeconfig returns a kubeconfig for server with embedded CA and
// client certificate data.
func clientCertKubeconfig(server string, caPEM []byte, user string, certPEM, keyPEM []byte) *clientcmdapi.Config {
	ctxName := user + "@" + kubeconfigCluster
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[kubeconfigCluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[ctxName] = &clientcmdapi.Context{Cluster: kubeconfigCluster, AuthInfo: user}
	cfg.CurrentContext = ctxName
	return cfg
}

// writeKubeconfig serializes cfg to path with mode 0600, through a
// temporary file and a rename so readers never see a partial file.
func writeKubeconfig(path string, cfg *clientcmdapi.Config) error {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("serialize kubeconfig %s: %w", path, err)
	}
	return writeFileAtomic(path, data, 0o600)
}

// writeFileAtomic writes data to a temporary file beside path, sets mode,
// and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

// WriteBootstrapKubeconfig writes a bootstrap kubeconfig (mode 0600) for
// server cp.URL that authenticates with the bootstrap token: cluster
// "kubernetes", user "tls-bootstrap-token-user", context
// "tls-bootstrap-token-user@kubernetes", as kubeadm writes
// /etc/kubernetes/bootstrap-kubelet.conf. With embedCA the cluster CA goes
// into certificate-authority-data; otherwise certificate-authority names
// cp.CAFile by absolute path.
func (cp *ControlPlane) WriteBootstrapKubeconfig(path, token string, embedCA bool) error {
	const user = "tls-bootstrap-token-user"
	cluster := &clientcmdapi.Cluster{Server: cp.URL}
	if embedCA {
		cluster.CertificateAuthorityData = cp.CACertPEM
	} else {
		abs, err := filepath.Abs(cp.CAFile)
		if err != nil {
			return fmt.Errorf("bootstrap kubeconfig: absolute CA path: %w", err)
		}
		cluster.CertificateAuthority = abs
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[kubeconfigCluster] = cluster
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user+"@"+kubeconfigCluster] = &clientcmdapi.Context{Cluster: kubeconfigCluster, AuthInfo: user}
	cfg.CurrentContext = user + "@" + kubeconfigCluster
	if err := writeKubeconfig(path, cfg); err != nil {
		return fmt.Errorf("bootstrap kubeconfig: %w", err)
	}
	return nil
}
