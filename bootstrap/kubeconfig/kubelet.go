package kubeconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeletCluster is the cluster entry kubelet.conf gets from src, the entry
// of the kubeconfig the client certificate was obtained with (the bootstrap
// kubeconfig, or kubelet.conf as it was): every setting that decides where
// and how the node reaches the API server is carried, so that kubelet.conf
// connects exactly as that kubeconfig did. Each field of
// clientcmdapi.Cluster is decided here (TestKubeletClusterDecidesEveryField
// fails when client-go adds one).
func KubeletCluster(src *clientcmdapi.Cluster) (*clientcmdapi.Cluster, error) {
	out := &clientcmdapi.Cluster{
		// LocationOfOrigin: where clientcmd read the entry; never written.
		Server:        src.Server,        // where
		TLSServerName: src.TLSServerName, // the name the server's certificate must carry
		// Refused at bootstrap unless allowInsecureBootstrap; kept as it was.
		InsecureSkipTLSVerify: src.InsecureSkipTLSVerify,
		// As it was: a file (made absolute: kubelet.conf may live in another
		// directory) or embedded data, which wins if both are set.
		CertificateAuthority:     src.CertificateAuthority,
		CertificateAuthorityData: src.CertificateAuthorityData,
		ProxyURL:                 src.ProxyURL, // through what
		DisableCompression:       src.DisableCompression,
	}
	if out.CertificateAuthority != "" && !filepath.IsAbs(out.CertificateAuthority) {
		abs, err := filepath.Abs(out.CertificateAuthority)
		if err != nil {
			return nil, fmt.Errorf("resolving CA path: %w", err)
		}
		out.CertificateAuthority = abs
	}
	// Extensions tell credential plugins about the cluster; kubelet.conf
	// uses none, but they cost nothing and keep the entry whole.
	if len(src.Extensions) > 0 {
		out.Extensions = make(map[string]runtime.Object, len(src.Extensions))
		for k, v := range src.Extensions {
			if v != nil {
				v = v.DeepCopyObject()
			}
			out.Extensions[k] = v
		}
	}
	return out, nil
}

// EncodeKubelet encodes kubelet.conf the way the kubelet writes it
// after bootstrapping (cluster default-cluster, user default-auth, context
// default-context) with the connection settings of cluster (KubeletCluster)
// and the client certificate and key referenced through pemPath, the current
// link, never embedded, so renewals need no rewrite.
func EncodeKubelet(cluster *clientcmdapi.Cluster, pemPath string) ([]byte, error) {
	kc, err := KubeletCluster(cluster)
	if err != nil {
		return nil, err
	}
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"default-cluster": kc},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"default-auth": {ClientCertificate: pemPath, ClientKey: pemPath}},
		Contexts:       map[string]*clientcmdapi.Context{"default-context": {Cluster: "default-cluster", AuthInfo: "default-auth", Namespace: "default"}},
		CurrentContext: "default-context",
	}
	data, err := clientcmd.Write(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding kubeconfig: %w", err)
	}
	return data, nil
}

// LinkTarget is the file path names: path itself, or what its chain of
// symlinks ends at (which may not exist yet).
func LinkTarget(path string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", fmt.Errorf("inspecting %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return path, nil
		}
		next, err := os.Readlink(path)
		if err != nil {
			return "", fmt.Errorf("reading link %s: %w", path, err)
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(path), next)
		}
		path = next
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}
