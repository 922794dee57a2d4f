package bootstrap

import (
	"crypto"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"net"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// Kind says which of the kubelet's two certificates a request is for.
type Kind string

const (
	// Client is the kubelet's client certificate, used to talk to the API server.
	Client Kind = "client"
	// Serving is the kubelet's serving certificate, presented on its HTTPS port.
	Serving Kind = "server"
)

// Signer returns the Kubernetes signer name for the kind.
func (k Kind) Signer() string {
	if k == Serving {
		return certificatesv1.KubeletServingSignerName
	}
	return certificatesv1.KubeAPIServerClientKubeletSignerName
}

// FilePrefix is the kubelet's file name prefix: kubelet-client or kubelet-server.
func (k Kind) FilePrefix() string { return "kubelet-" + string(k) }

// ExtKeyUsage is the extended key usage the issued certificate must carry.
func (k Kind) ExtKeyUsage() x509.ExtKeyUsage {
	if k == Serving {
		return x509.ExtKeyUsageServerAuth
	}
	return x509.ExtKeyUsageClientAuth
}

// Request describes one certificate request for a node.
type Request struct {
	Kind     Kind
	NodeName string
	// DNSNames and IPAddresses are the serving certificate's SANs; empty for Client.
	DNSNames    []string
	IPAddresses []net.IP
	// ExpirationSeconds, when non-zero, is sent as spec.expirationSeconds (minimum 600).
	ExpirationSeconds int32
}

// Subject is CN=system:node:<node>, O=system:nodes, as the Node authorizer requires.
func (r Request) Subject() pkix.Name {
	return pkix.Name{CommonName: "system:node:" + r.NodeName, Organization: []string{"system:nodes"}}
}

// Usages are the minimal key usages for an ECDSA key: no key encipherment.
func (r Request) Usages() []certificatesv1.KeyUsage {
	if r.Kind == Serving {
		return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	}
	return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
}

// CSRName is the deterministic object name for this request made with pub:
// node-csr- followed by base64url(SHA-512/256) over the public key, the
// subject and the usages, exactly as the kubelet's own bootstrap names it.
// The same key and request always give the same name, so a restarted agent
// finds its pending CSR instead of creating another.
func (r Request) CSRName(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshalling public key: %w", err)
	}
	h := sha512.New512_256()
	encode := base64.RawURLEncoding.EncodeToString
	write := func(b []byte) {
		h.Write([]byte(encode(b)))
		h.Write([]byte{'|'}) // not in the base64url alphabet: no spill-over collisions
	}
	write(der)
	subject := r.Subject()
	write([]byte(subject.CommonName))
	for _, o := range subject.Organization {
		write([]byte(o))
	}
	for _, u := range r.Usages() {
		write([]byte(u))
	}
	return "node-csr-" + encode(h.Sum(nil)), nil
}
