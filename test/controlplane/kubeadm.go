package controlplane

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// KubeadmJoin is what `kubeadm join` needs to join a node to a control plane
// prepared by PrepareKubeadm: the three values `kubeadm token create
// --print-join-command` prints.
type KubeadmJoin struct {
	// Endpoint is the API server as host:port (127.0.0.1:<port>), the
	// address the join's discovery fetches kube-public/cluster-info from;
	// the API server's serving certificate names 127.0.0.1.
	Endpoint string
	// Token is a bootstrap token in kubeadm's node-token group
	// (system:bootstrappers:kubeadm:default-node-token), created by
	// `kubeadm init phase bootstrap-token`.
	Token string
	// CACertHash is sha256:<hex> of the cluster CA's public key, for
	// --discovery-token-ca-cert-hash.
	CACertHash string
	// KubeletPort and KubeletHealthzPort are the port and healthzPort of the
	// cluster's KubeletConfiguration (the kubelet-config ConfigMap): free
	// ports, as nodes in the node suite share the host's network.
	KubeletPort, KubeletHealthzPort int
}

// PrepareKubeadm prepares the running control plane the way `kubeadm init`
// leaves a cluster for joining nodes, with the kubeadm binary itself:
// `kubeadm init phase bootstrap-token` (a bootstrap token; the RBAC that lets
// it post CSRs, read the Nodes and have client CSRs auto-approved; the
// kube-public/cluster-info ConfigMap, which it rewrites from the admin
// kubeconfig, replacing the one Start made, and its anonymous read access)
// and `kubeadm init phase upload-config all` (kube-system/kubeadm-config and
// kube-system/kubelet-config, with their RBAC), both with the admin
// kubeconfig and a configuration whose controlPlaneEndpoint is this API
// server. The cluster's KubeletConfiguration gets free ports for port and
// healthzPort. The work directory is cp.Dir/kubeadm.
//
// kubeadm refuses a loopback localAPIEndpoint.advertiseAddress, so the
// host's primary address (as Kubernetes chooses it) stands there; nothing
// dials it: the API server listens on 127.0.0.1 only, and joining nodes use
// controlPlaneEndpoint and cluster-info, both 127.0.0.1:<port>.
func (cp *ControlPlane) PrepareKubeadm(ctx context.Context, kubeadm string) (*KubeadmJoin, error) {
	u, err := url.Parse(cp.URL)
	if err != nil {
		return nil, fmt.Errorf("prepare kubeadm: API server URL %q: %w", cp.URL, err)
	}
	advertise, err := utilnet.ChooseHostInterface()
	if err != nil {
		return nil, fmt.Errorf("prepare kubeadm: choosing the host's address for localAPIEndpoint.advertiseAddress (kubeadm refuses loopback): %w", err)
	}
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return nil, fmt.Errorf("prepare kubeadm: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("prepare kubeadm: %w", err)
	}
	hash, err := caCertHash(cp.CACertPEM)
	if err != nil {
		return nil, fmt.Errorf("prepare kubeadm: %w", err)
	}
	dir := filepath.Join(cp.Dir, "kubeadm")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("prepare kubeadm: %w", err)
	}
	config := filepath.Join(dir, "config.yaml")
	data := fmt.Sprintf(kubeadmConfigTemplate, token, advertise, u.Port(), cp.bins.Version, u.Host, ports[0], ports[1])
	if err := os.WriteFile(config, []byte(data), 0o600); err != nil {
		return nil, fmt.Errorf("prepare kubeadm: %w", err)
	}
	for _, phase := range [][]string{{"bootstrap-token"}, {"upload-config", "all"}} {
		args := append(append([]string{"init", "phase"}, phase...), "--kubeconfig", cp.AdminKubeconfig, "--config", config)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, err := exec.CommandContext(cctx, kubeadm, args...).CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("prepare kubeadm: kubeadm %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		cp.logf("control plane: kubeadm %s:\n%s", strings.Join(phase, " "), strings.TrimSpace(string(out)))
	}
	return &KubeadmJoin{Endpoint: u.Host, Token: token, CACertHash: hash, KubeletPort: ports[0], KubeletHealthzPort: ports[1]}, nil
}

// kubeadmConfigTemplate: token, advertise address, bind port, Kubernetes
// version, controlPlaneEndpoint, kubelet port, kubelet healthz port.
// certificatesDir stays kubeadm's default, /etc/kubernetes/pki: the cluster's
// KubeletConfiguration names its ca.crt as the kubelet's clientCAFile, where
// kubeadm join puts the CA on each node.
const kubeadmConfigTemplate = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: %s
  description: certagent test cluster
  ttl: 24h0m0s
  usages: [signing, authentication]
  groups: [system:bootstrappers:kubeadm:default-node-token]
localAPIEndpoint:
  advertiseAddress: %s
  bindPort: %s
nodeRegistration:
  name: certagent-test-control-plane
  criSocket: unix:///run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %s
controlPlaneEndpoint: %s
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
port: %d
healthzPort: %d
`

// caCertHash is kubeadm's --discovery-token-ca-cert-hash of a CA
// certificate: sha256 over its SubjectPublicKeyInfo.
func caCertHash(caPEM []byte) (string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return "", fmt.Errorf("the cluster CA is not PEM")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("parsing the cluster CA: %w", err)
	}
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
