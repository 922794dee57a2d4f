package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// TrustConfig follows the trust the cluster publishes through a CA rotation
// (docs/ca-rotation.md). Off unless Follow is set.
type TrustConfig struct {
	// Follow keeps kubelet.conf's CA, as the file CAFile, and
	// KubeletClientCAFile in step with the ClusterTrustBundles the cluster
	// publishes, and re-issues the certificates once the kubelet signers
	// issue from a new CA.
	Follow bool `json:"follow,omitempty"`
	// CAFile is the file kubelet.conf's certificate-authority names.
	// Default: kube-apiserver-ca.crt in certDir.
	CAFile string `json:"caFile,omitempty"`
	// KubeletClientCAFile, if set, is the kubelet's clientCAFile, kept as the
	// bundle published for KubeletClientCASigner.
	KubeletClientCAFile string `json:"kubeletClientCAFile,omitempty"`
	// KubeletClientCASigner is the signer whose published bundle
	// KubeletClientCAFile holds. Default kubernetes.io/kube-apiserver-serving:
	// one cluster CA signs both, as kubeadm sets it up.
	KubeletClientCASigner string `json:"kubeletClientCASigner,omitempty"`
	// ReissueSpread: a certificate re-issued because its signer moved to a
	// new CA waits a random part of this, so that a fleet does not ask at
	// once. Default 10m.
	ReissueSpread Duration `json:"reissueSpread,omitempty"`
}

// Defaults of the trust section.
const (
	DefaultTrustCAFileName       = "kube-apiserver-ca.crt"
	DefaultKubeletClientCASigner = "kubernetes.io/kube-apiserver-serving"
	DefaultReissueSpread         = 10 * time.Minute
)

// TrustCAFile is the file kubelet.conf's CA is kept in when following.
func (c Config) TrustCAFile() string {
	if c.Trust.CAFile != "" {
		return c.Trust.CAFile
	}
	return filepath.Join(c.CertDir, DefaultTrustCAFileName)
}

// KubeletClientCASigner is trust.kubeletClientCASigner or its default.
func (c Config) KubeletClientCASigner() string {
	if c.Trust.KubeletClientCASigner != "" {
		return c.Trust.KubeletClientCASigner
	}
	return DefaultKubeletClientCASigner
}

// ReissueSpread is trust.reissueSpread or its default.
func (c Config) ReissueSpread() time.Duration {
	if d := c.Trust.ReissueSpread.Duration; d > 0 {
		return d
	}
	return DefaultReissueSpread
}

// validate checks the trust section; one that is off is valid whatever it holds.
func (t TrustConfig) validate() error {
	if !t.Follow {
		return nil
	}
	var errs []error
	for name, p := range map[string]string{"trust.caFile": t.CAFile, "trust.kubeletClientCAFile": t.KubeletClientCAFile} {
		if p != "" && !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", name, p))
		}
	}
	if t.ReissueSpread.Duration < 0 {
		errs = append(errs, errors.New("trust.reissueSpread must not be negative"))
	}
	return errors.Join(errs...)
}
