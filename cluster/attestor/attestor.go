package attestor

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/protocol/attestation"
)

// Config configures an Attestor; New checks it.
type Config struct {
	// Enrollments says which node an EK is enrolled for. Required: the
	// enrolment is where a node's name comes from, with or without
	// ManufacturerCAs.
	Enrollments Enrollments
	// Issuer issues an attested CSR. Required.
	Issuer Issuer
	// ManufacturerCAs, if set, turns on the policy that the node's EK
	// certificate must chain to one of these CAs (and that it has one).
	ManufacturerCAs *ManufacturerCAs
	// SessionTTL is how long a node has from begin to finish; 60s if zero.
	// A TPM's RSA decryption and a quote take well under a second.
	SessionTTL time.Duration
	// MaxSessions bounds open sessions in all (10000 if zero) and per EK
	// (MaxSessionsPerEK, 4 if zero).
	MaxSessions, MaxSessionsPerEK int
	// Clock is the time source; the real clock if nil.
	Clock clock.PassiveClock
	// Rand is the source of secrets, nonces and session ids; crypto/rand if nil.
	Rand io.Reader
	// Observer is told every outcome; none if nil.
	Observer Observer
	// Logger gets one line per refusal and per issued certificate, named
	// "attestor"; zap.NewNop() if nil.
	Logger *zap.Logger
}

// Attestor verifies attestations and has attested CSRs issued. It is safe
// for concurrent use.
type Attestor struct {
	enrolled Enrollments
	issuer   Issuer
	cas      *ManufacturerCAs
	clock    clock.PassiveClock
	rand     io.Reader
	observer Observer
	log      *zap.Logger
	sessions *sessionStore
}

// New checks cfg and returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.Enrollments == nil {
		return nil, errors.New("attestor: Enrollments is required")
	}
	if cfg.Issuer == nil {
		return nil, errors.New("attestor: Issuer is required")
	}
	if cfg.ManufacturerCAs != nil && cfg.ManufacturerCAs.Roots == nil {
		return nil, errors.New("attestor: ManufacturerCAs without Roots would trust nothing; leave it nil to turn the policy off")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = time.Minute
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.MaxSessionsPerEK == 0 {
		cfg.MaxSessionsPerEK = 4
	}
	if cfg.SessionTTL < 0 || cfg.MaxSessions < 0 || cfg.MaxSessionsPerEK < 0 {
		return nil, fmt.Errorf("attestor: SessionTTL %v, MaxSessions %d, MaxSessionsPerEK %d must not be negative", cfg.SessionTTL, cfg.MaxSessions, cfg.MaxSessionsPerEK)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Attestor{
		enrolled: cfg.Enrollments,
		issuer:   cfg.Issuer,
		cas:      cfg.ManufacturerCAs,
		clock:    cfg.Clock,
		rand:     cfg.Rand,
		observer: cfg.Observer,
		log:      cfg.Logger.Named("attestor"),
		sessions: newSessionStore(cfg.Clock, cfg.SessionTTL, cfg.MaxSessions, cfg.MaxSessionsPerEK),
	}, nil
}

// outcome is one call's result for the handler to log, count and answer.
type outcome struct {
	node, claimed, ekHash string
	refusal               *attestation.Error
	cause                 error // for the log only: an internal failure's detail
}

// begin runs the checks a BeginRequest must pass, in checklist order, then
// opens a session with a credential for the AK under the EK and a nonce.
func (a *Attestor) begin(ctx context.Context, req *attestation.BeginRequest) (*attestation.BeginResponse, outcome) {
	o := outcome{node: req.NodeName, claimed: req.NodeName}
	if o.refusal = req.Validate(); o.refusal != nil {
		return nil, o
	}
	ek, ekDER, rerr := parseEKPublic(req.EKPublic)
	if rerr != nil {
		o.refusal = rerr
		return nil, o
	}
	o.ekHash = attestation.EKHash(ekDER)
	cert, rerr := parseEKCert(req.EKCertificate)
	if rerr == nil {
		rerr = checkEKCertMatches(cert, ek)
	}
	if rerr == nil {
		rerr = checkEKCertChain(cert, a.cas, a.clock.Now())
	}
	if rerr != nil {
		o.refusal = rerr
		return nil, o
	}
	name, rerr, err := lookupEnrolledName(ctx, a.enrolled, o.ekHash)
	if rerr != nil {
		o.refusal, o.cause = rerr, err
		return nil, o
	}
	o.node = name
	if o.refusal = checkNameMatches(name, req.NodeName); o.refusal != nil {
		return nil, o
	}
	key, rerr := parseAK(req.AKPublic)
	if rerr != nil {
		o.refusal = rerr
		return nil, o
	}
	csrDER, _ := attestation.CSRDER(req.CSR) // checked by Validate
	csr, rerr := checkCSR(csrDER, name)
	if rerr != nil {
		o.refusal = rerr
		return nil, o
	}

	s := &session{ekHash: o.ekHash, node: name, ak: key, csrDER: csrDER, csrPEM: []byte(req.CSR), csr: csr, expSecs: req.ExpirationSeconds}
	rsp, refusal, err := a.challenge(s, ek)
	o.refusal, o.cause = refusal, err
	return rsp, o
}

// challenge opens session s: a random id, secret and nonce, the secret
// wrapped in a credential only the TPM holding ek can activate, and only
// for s's AK.
func (a *Attestor) challenge(s *session, ek *rsa.PublicKey) (*attestation.BeginResponse, *attestation.Error, error) {
	id := make([]byte, 24)
	s.secret, s.nonce = make([]byte, 32), make([]byte, 32)
	for _, b := range [][]byte{id, s.secret, s.nonce} {
		if _, err := io.ReadFull(a.rand, b); err != nil {
			return nil, attestation.Refuse(attestation.ReasonInternal, "the service could not make a challenge; try again"), err
		}
	}
	s.id = base64.RawURLEncoding.EncodeToString(id)
	credential, encSecret, err := makeCredential(a.rand, ek, s.ak.name, s.secret)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonInternal, "the service could not make a credential for this EK; try again"), err
	}
	if refusal := a.sessions.add(s); refusal != nil {
		return nil, refusal, nil
	}
	return &attestation.BeginResponse{
		SessionID:       s.id,
		Credential:      credential,
		EncryptedSecret: encSecret,
		Nonce:           s.nonce,
		Expires:         s.expires,
	}, nil, nil
}

// finish runs the checks a FinishRequest must pass against its session, in
// checklist order, then has the session's CSR issued.
func (a *Attestor) finish(ctx context.Context, req *attestation.FinishRequest) (*attestation.FinishResponse, outcome) {
	var o outcome
	if o.refusal = req.Validate(); o.refusal != nil {
		return nil, o
	}
	s, who, rerr := a.sessions.take(req.SessionID)
	o.node, o.claimed, o.ekHash = who.node, who.node, who.ekHash
	if rerr != nil {
		o.refusal = rerr
		return nil, o
	}
	if o.refusal = checkSecret(s.secret, req.Secret); o.refusal != nil {
		return nil, o
	}
	if o.refusal = checkQuoteSignature(s.ak, req.Attest, req.Signature); o.refusal != nil {
		return nil, o
	}
	if o.refusal = checkQuoteData(req.Attest, attestation.QualifyingData(s.nonce, s.csrDER)); o.refusal != nil {
		return nil, o
	}
	if rerr, err := a.recheckEnrollment(ctx, s); rerr != nil {
		o.refusal, o.cause = rerr, err
		return nil, o
	}
	chain, err := a.issuer.Issue(ctx, IssueRequest{NodeName: s.node, EKHash: s.ekHash, CSRPEM: s.csrPEM, CSR: s.csr, ExpirationSeconds: s.expSecs})
	if err != nil {
		o.refusal, o.cause = attestation.Refuse(attestation.ReasonIssueFailed, "the attestation passed but issuing the certificate failed; begin again later"), err
		return nil, o
	}
	if o.refusal = checkIssued(chain, s.csr, s.node); o.refusal != nil {
		return nil, o
	}
	return &attestation.FinishResponse{CertificateChain: string(chain)}, o
}

// recheckEnrollment: the EK is still enrolled for the session's node when
// the certificate is about to be issued, so withdrawing an enrolment takes
// effect even on an exchange already begun.
func (a *Attestor) recheckEnrollment(ctx context.Context, s *session) (*attestation.Error, error) {
	name, rerr, err := lookupEnrolledName(ctx, a.enrolled, s.ekHash)
	if rerr != nil {
		return rerr, err
	}
	return checkNameMatches(name, s.node), nil
}
