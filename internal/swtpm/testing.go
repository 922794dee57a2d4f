package swtpm

import (
	"path/filepath"
	"testing"
)

// NewTestCA is NewCA in a directory of t's own; a failure (swtpm missing
// included) fails the test.
func NewTestCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := NewCA(filepath.Join(t.TempDir(), "ca-"+name), name)
	if err != nil {
		t.Fatalf("swtpm CA %s: %v", name, err)
	}
	return ca
}

// StartTest manufactures a TPM with ca's EK certificates and runs it until
// t's cleanup kills it. A failure (swtpm missing included) fails the test.
func StartTest(t testing.TB, ca *CA) *TPM {
	t.Helper()
	tpm, err := Manufacture(filepath.Join(t.TempDir(), "tpm"), ca)
	if err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	if err := tpm.Start(); err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	t.Cleanup(tpm.Stop)
	return tpm
}
