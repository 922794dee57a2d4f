package agent

import (
	"crypto/x509"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/tpm"
)

// attestation builds the TPM attestation source of cfg (nil when it is off).
func attestation(cfg config.Config, log *zap.Logger) (*bootstrap.Attestation, error) {
	a := cfg.Attestation
	if !a.Enabled() {
		return nil, nil
	}
	tc := tpm.Config{
		TPMPath:           a.TPM,
		ServiceURL:        a.ServiceURL,
		ServiceCAHash:     a.ServiceCAHash,
		NodeName:          cfg.NodeName,
		ExpirationSeconds: int32(cfg.Rotation.RequestedDuration.Seconds()),
		Logger:            log,
	}
	if a.ServiceCAFile != "" {
		data, err := os.ReadFile(a.ServiceCAFile)
		if err != nil {
			return nil, fmt.Errorf("attestation.serviceCAFile: %w", err)
		}
		tc.ServiceCAs = x509.NewCertPool()
		if !tc.ServiceCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("attestation.serviceCAFile %s holds no PEM certificate", a.ServiceCAFile)
		}
	}
	att, err := tpm.New(tc)
	if err != nil {
		return nil, err
	}
	return &bootstrap.Attestation{Attest: att.Attest, Service: a.ServiceURL, Server: a.Server, CAFile: a.CertificateAuthority,
		AfterToken: a.Order == config.OrderAfterToken}, nil
}
