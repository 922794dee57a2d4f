// Package attestation holds the end-to-end tests of TPM attestation's
// cluster side (see attestation_test.go); it has no code of its own.
package attestation
