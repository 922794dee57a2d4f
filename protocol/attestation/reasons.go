package attestation

import (
	"fmt"
	"net/http"
)

// Reason is the machine-readable cause of a refusal. Every refusal the
// service sends names one, and logs and counts it under the same name.
type Reason string

// The reasons, in the order the service checks them.
const (
	// ReasonBadRequest: a message that is malformed, too large or incomplete.
	ReasonBadRequest Reason = "bad_request"
	// ReasonEKCertMismatch: the EK certificate certifies another key than the EK sent.
	ReasonEKCertMismatch Reason = "ek_cert_mismatch"
	// ReasonUntrustedEKCA: the EK certificate does not chain to a trusted
	// manufacturer CA (or is missing where the policy requires one).
	ReasonUntrustedEKCA Reason = "untrusted_ek_ca"
	// ReasonUnknownEK: no node is enrolled for this EK.
	ReasonUnknownEK Reason = "unknown_ek"
	// ReasonAmbiguousEnrollment: more than one node is enrolled for this EK,
	// so which node the TPM is cannot be told; an operator must remove all
	// but one enrolment.
	ReasonAmbiguousEnrollment Reason = "ambiguous_enrollment"
	// ReasonNameMismatch: the name asked for (in the request or the CSR) is
	// not the name enrolled for this EK.
	ReasonNameMismatch Reason = "name_mismatch"
	// ReasonBadAK: the AK is not a TPM-resident restricted signing key of the
	// supported kind.
	ReasonBadAK Reason = "bad_ak"
	// ReasonBadCSR: the CSR is not a valid kubelet client request.
	ReasonBadCSR Reason = "bad_csr"
	// ReasonUnknownSession: no such session (never issued, or forgotten after
	// a restart of the service): begin again.
	ReasonUnknownSession Reason = "unknown_session"
	// ReasonStaleNonce: the session expired before the finish: begin again.
	ReasonStaleNonce Reason = "stale_nonce"
	// ReasonReplayed: the session was already finished (each is single use).
	ReasonReplayed Reason = "replayed"
	// ReasonBadSecret: the activated secret is wrong: the AK is not in the TPM
	// that holds the EK.
	ReasonBadSecret Reason = "bad_secret"
	// ReasonBadSignature: the attestation is not signed by the AK.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonBadQuote: the signed attestation is not a TPM-generated quote over
	// this exchange's nonce and CSR.
	ReasonBadQuote Reason = "bad_quote"
	// ReasonBusy: too many open sessions (for this EK or in all); try later.
	ReasonBusy Reason = "busy"
	// ReasonIssueFailed: the checks passed but the certificate could not be
	// issued; try later.
	ReasonIssueFailed Reason = "issue_failed"
	// ReasonInternal: the service failed; try later.
	ReasonInternal Reason = "internal"
)

// Reasons lists every reason, in the order the service checks them (for
// metrics that start every series at zero).
var Reasons = []Reason{
	ReasonBadRequest, ReasonEKCertMismatch, ReasonUntrustedEKCA, ReasonUnknownEK,
	ReasonAmbiguousEnrollment, ReasonNameMismatch, ReasonBadAK, ReasonBadCSR,
	ReasonUnknownSession, ReasonStaleNonce, ReasonReplayed, ReasonBadSecret,
	ReasonBadSignature, ReasonBadQuote, ReasonBusy, ReasonIssueFailed, ReasonInternal,
}

// HTTPStatus is the status code the service answers a refusal with.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonBadRequest:
		return http.StatusBadRequest
	case ReasonUnknownSession:
		return http.StatusNotFound
	case ReasonReplayed:
		return http.StatusConflict
	case ReasonStaleNonce:
		return http.StatusGone
	case ReasonBusy:
		return http.StatusTooManyRequests
	case ReasonIssueFailed:
		return http.StatusBadGateway
	case ReasonInternal:
		return http.StatusInternalServerError
	default:
		return http.StatusForbidden
	}
}

// Retryable says whether starting a new exchange later may succeed without
// anyone changing anything: the service was busy, failing or restarted, or the
// node was too slow. Every other reason needs an operator (enrol the EK, trust
// its CA, fix the name) and retrying it only repeats the refusal.
func (r Reason) Retryable() bool {
	switch r {
	case ReasonUnknownSession, ReasonStaleNonce, ReasonBusy, ReasonIssueFailed, ReasonInternal:
		return true
	}
	return false
}

// Error is the body of every refusal.
type Error struct {
	Reason Reason `json:"reason"`
	// Message says, for a person, what failed and what to do; it never holds
	// a secret.
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("attestation refused (%s): %s", e.Reason, e.Message)
}

// Refuse makes an Error.
func Refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Message: fmt.Sprintf(format, args...)}
}
