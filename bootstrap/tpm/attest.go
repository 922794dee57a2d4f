package tpm

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/protocol/attestation"
)

// Config configures an Attestor. Every field is checked by New.
type Config struct {
	// TPMPath is the TPM: DefaultPath (/dev/tpmrm0) if empty, another
	// device, or "tcp://host:port" / "unix:/path" for a software TPM.
	TPMPath string
	// ServiceURL is the attestation service, https://host[:port]. Required.
	ServiceURL string
	// ServiceCAs verifies the service's serving certificate; it comes from
	// the node's user-data, with the service URL. It or ServiceCAHash is
	// required.
	ServiceCAs *x509.CertPool
	// ServiceCAHash pins the service's CA instead ("sha256:<hex>" of its
	// SubjectPublicKeyInfo, attestation.ServiceCAHash; what init-tls prints):
	// the service sends its CA after its certificate, and the certificate
	// must chain to the CA in that chain whose key has this hash.
	ServiceCAHash string
	// NodeName is the node name to obtain a certificate for; the service
	// refuses any other than the one enrolled for this TPM. Required.
	NodeName string
	// ExpirationSeconds, if not zero, is the client certificate lifetime to
	// ask for (at least attestation.MinExpirationSeconds); the service and
	// the signer may shorten it.
	ExpirationSeconds int32
	// CallTimeout bounds each of the two HTTPS calls; 30s if zero.
	CallTimeout time.Duration
	// Logger is named "tpm" below it; zap.NewNop() if nil.
	Logger *zap.Logger
}

// Attestor proves this node's TPM to the attestation service and brings back
// a certificate for the node's CSR.
type Attestor struct {
	cfg    Config
	client *serviceClient
	log    *zap.Logger
}

// New checks cfg and returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.ServiceCAs == nil && cfg.ServiceCAHash == "" {
		return nil, errors.New("attestation: the attestation service's CA is required (ServiceCAs, or ServiceCAHash to pin it)")
	}
	if verr := attestation.ValidateNodeName(cfg.NodeName); verr != nil {
		return nil, fmt.Errorf("attestation: %s", verr.Message)
	}
	if cfg.ExpirationSeconds != 0 && cfg.ExpirationSeconds < attestation.MinExpirationSeconds {
		return nil, fmt.Errorf("attestation: ExpirationSeconds %d is below the least Kubernetes accepts, %d", cfg.ExpirationSeconds, attestation.MinExpirationSeconds)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.CallTimeout < 0 {
		return nil, fmt.Errorf("attestation: CallTimeout %v is negative", cfg.CallTimeout)
	}
	client, err := newServiceClient(cfg.ServiceURL, cfg.ServiceCAs, cfg.ServiceCAHash, cfg.CallTimeout)
	if err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Attestor{cfg: cfg, client: client, log: log.Named("tpm")}, nil
}

// Attest runs one exchange for csrPEM (the kubelet client CSR, made on the
// node): begin, activate the credential, quote, finish. It returns the issued
// certificate chain (PEM), which the caller verifies and stores as for any
// other credential source. A refusal is an *attestation.Error (see Refusal);
// its Reason.Retryable says whether trying again later can help. The TPM is
// opened for the exchange only, and everything loaded in it is flushed.
func (a *Attestor) Attest(ctx context.Context, csrPEM []byte) ([]byte, error) {
	csrDER, verr := attestation.CSRDER(string(csrPEM))
	if verr != nil {
		return nil, fmt.Errorf("attesting: %s", verr.Message)
	}
	d, err := OpenDevice(a.cfg.TPMPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.Close() }()

	log := a.log.With(zap.String("ek_hash", attestation.EKHash(d.EKPublic())), zap.String("node", a.cfg.NodeName))
	ch, err := a.client.begin(ctx, &attestation.BeginRequest{
		NodeName:          a.cfg.NodeName,
		EKPublic:          d.EKPublic(),
		EKCertificate:     d.EKCertificate(),
		AKPublic:          d.AKPublic(),
		CSR:               string(csrPEM),
		ExpirationSeconds: a.cfg.ExpirationSeconds,
	})
	if err != nil {
		return nil, fmt.Errorf("beginning attestation: %w", err)
	}
	log.Debug("attestation begun", zap.Time("expires", ch.Expires))
	secret, err := d.ActivateCredential(ch.Credential, ch.EncryptedSecret)
	if err != nil {
		return nil, err
	}
	attest, sig, err := d.Quote(attestation.QualifyingData(ch.Nonce, csrDER))
	if err != nil {
		return nil, err
	}
	done, err := a.client.finish(ctx, &attestation.FinishRequest{
		SessionID: ch.SessionID,
		Secret:    secret,
		Attest:    attest,
		Signature: sig,
	})
	if err != nil {
		return nil, fmt.Errorf("finishing attestation: %w", err)
	}
	log.Info("attested; certificate issued")
	return []byte(done.CertificateChain), nil
}
