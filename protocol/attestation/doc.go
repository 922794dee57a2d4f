// Package attestation is the wire protocol between certagent on a node and
// the cluster-side attestation service: the messages of the two calls, their
// syntactic validation, the refusal reasons, and the two derivations both
// sides must compute alike (the EK hash an operator enrols, and the quote's
// qualifying data that binds the kubelet's CSR to one exchange).
//
// The exchange, JSON over HTTPS:
//
//	POST /v1/attest/begin   node → BeginRequest   service → BeginResponse
//	POST /v1/attest/finish  node → FinishRequest  service → FinishResponse
//	any refusal             service → Error (HTTP 4xx/5xx, a Reason and a message)
//
// This package is shared: it imports neither the node half (bootstrap/tpm) nor
// the cluster half (cluster/attestor), nor any TPM library. TPM structures
// travel as opaque bytes here; each side parses them with its own checks.
// Validate only checks what can be checked without a TPM library or state:
// presence, sizes and syntax. The verifier's checks are in cluster/attestor.
package attestation
