// Package attestor is the cluster half of TPM attestation: it verifies that a
// node holds the TPM enrolled for the node name it asks for, and only then
// has its kubelet client CSR issued.
//
// Each check that can refuse is one small named function (checks_*.go), run
// in the order of the checklist in docs/attestation.md, each refusing with
// its own protocol/attestation.Reason. The HTTP handler (handler.go) logs and
// reports every refusal with that reason.
//
// What it does not own: where enrolments live (Enrollments), how a CSR
// becomes a certificate (Issuer), metrics (Observer). Those come in as small
// interfaces so this package imports neither Kubernetes nor Prometheus. It
// must not import the node half (bootstrap/...): the two meet only in
// protocol/attestation.
package attestor
