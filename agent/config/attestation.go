package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
)

// AttestationConfig joins the node with its TPM: the attestation service
// (certagent-cluster) verifies the TPM enrolled for this node's name and has
// the node's own client CSR issued. Nothing in it is secret. Empty ServiceURL
// turns it off (docs/attestation.md).
type AttestationConfig struct {
	// ServiceURL is the attestation service, https://host:port (a node that
	// has not joined has no kube-proxy: an address it reaches directly).
	ServiceURL string `json:"serviceURL,omitempty"`
	// ServiceCAFile is the service's CA (PEM); or ServiceCAHash pins it
	// ("sha256:<hex>", as `certagent-cluster init-tls` prints it).
	ServiceCAFile string `json:"serviceCAFile,omitempty"`
	ServiceCAHash string `json:"serviceCAHash,omitempty"`
	// TPM is the TPM: /dev/tpmrm0, the kernel's resource manager, if empty.
	TPM string `json:"tpm,omitempty"`
	// Server and CertificateAuthority are the API server and the cluster CA
	// file that kubelet.conf gets after an attestation.
	Server               string `json:"server,omitempty"`
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	// Order is OrderBeforeToken (the default) or OrderAfterToken: whether
	// attestation is tried before a bootstrap kubeconfig, when there is one.
	Order string `json:"order,omitempty"`
}

// The orders of the two credential sources.
const (
	OrderBeforeToken = "beforeToken"
	OrderAfterToken  = "afterToken"
)

// Enabled reports whether attestation is configured.
func (a AttestationConfig) Enabled() bool { return a.ServiceURL != "" }

var caHash = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// validate checks an attestation configuration; one that is off is valid.
func (a AttestationConfig) validate() error {
	if !a.Enabled() {
		if a.Server != "" || a.CertificateAuthority != "" || a.ServiceCAFile != "" || a.ServiceCAHash != "" {
			return errors.New("attestation is configured without attestation.serviceURL: set it (the attestation service's https:// address)")
		}
		return nil
	}
	var errs []error
	if u, err := url.Parse(a.ServiceURL); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("attestation.serviceURL %q must be https://host[:port]", a.ServiceURL))
	}
	switch {
	case (a.ServiceCAFile == "") == (a.ServiceCAHash == ""):
		errs = append(errs, errors.New("attestation needs exactly one of serviceCAFile (the service's CA) and serviceCAHash (its sha256:… pin)"))
	case a.ServiceCAHash != "" && !caHash.MatchString(a.ServiceCAHash):
		errs = append(errs, fmt.Errorf("attestation.serviceCAHash %q is not sha256:<64 hex digits>", a.ServiceCAHash))
	}
	if u, err := url.Parse(a.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("attestation.server %q must be the API server's https:// address", a.Server))
	}
	if a.CertificateAuthority == "" {
		errs = append(errs, errors.New("attestation.certificateAuthority is empty: the cluster CA file kubelet.conf verifies the API server with"))
	}
	if a.Order != "" && a.Order != OrderBeforeToken && a.Order != OrderAfterToken {
		errs = append(errs, fmt.Errorf("attestation.order %q: use %s or %s", a.Order, OrderBeforeToken, OrderAfterToken))
	}
	return errors.Join(errs...)
}
