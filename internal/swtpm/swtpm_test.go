package swtpm

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestMissingSwtpmIsAnError: with swtpm not on PATH the harness fails with
// an error that says how to install it; it never skips.
func TestMissingSwtpmIsAnError(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := NewCA(t.TempDir(), "x"); !errors.Is(err, ErrMissing) {
		t.Fatalf("NewCA without swtpm: %v, want ErrMissing", err)
	}
}

// TestEachTPMIsItsOwn: two TPMs of one CA have different EK certificates,
// both issued by the CA's intermediate under its root; a restart keeps the
// TPM's identity; Stop closes its port.
func TestEachTPMIsItsOwn(t *testing.T) {
	ca := NewTestCA(t, "vendor")
	a, b := StartTest(t, ca), StartTest(t, ca)
	certA, certB := ekCert(t, a), ekCert(t, b)
	if bytes.Equal(certA, certB) {
		t.Fatal("two manufactured TPMs have the same EK certificate")
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ekCert(t, a), certA) {
		t.Error("the EK certificate changed across a restart")
	}
	addr := b.Addr
	b.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("swtpm still listening after Stop")
	}
}

// ekCert reads the RSA EK certificate with tpm2-tools, as an operator
// would, and checks the test's CA issued it.
func ekCert(t *testing.T, tpm *TPM) []byte {
	t.Helper()
	host, port, _ := net.SplitHostPort(tpm.Addr)
	out := filepath.Join(t.TempDir(), "ek.der")
	cmd := exec.Command("tpm2_nvread", "-o", out, "0x1c00002")
	cmd.Env = append(cmd.Environ(), "TPM2TOOLS_TCTI=swtpm:host="+host+",port="+port)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_nvread (make tpm-deps installs tpm2-tools): %v\n%s", err, msg)
	}
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(tpm.ca.Intermediate); err != nil {
		t.Errorf("the EK certificate is not signed by the test CA's issuer: %v", err)
	}
	if err := tpm.ca.Intermediate.CheckSignatureFrom(tpm.ca.Root); err != nil {
		t.Errorf("the issuer is not signed by the root: %v", err)
	}
	return der
}
