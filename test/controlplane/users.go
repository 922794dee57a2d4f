package controlplane

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"
)

// UserConfig returns a client configuration that authenticates as user, in
// groups, with a client certificate the cluster CA signs (written under
// Dir/pki as user-<user>.crt and .key). Such a user has no permissions until
// RBAC grants some, and, unless groups hold system:masters, API Priority and
// Fairness classifies it as the ordinary user it is (priority level
// global-default), not as the exempt admin.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	base := filepath.Join(cp.Dir, "pki", "user-"+user)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err := cp.pki.issue(tmpl, base+".crt", base+".key")
	if err != nil {
		return nil, fmt.Errorf("client certificate for %s: %w", user, err)
	}
	return &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.clientCAPEM, CertData: certPEM, KeyData: keyPEM},
		UserAgent:       "certagent-test-" + user,
	}, nil
}
