package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
)

func openDevice(t *testing.T, path string) *Device {
	t.Helper()
	d, err := OpenDevice(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEnrollmentNamesTheEKAndItsIssuer(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	sw := swtpm.StartTest(t, ca)

	info, err := Enrollment(sw.Path())
	if err != nil {
		t.Fatal(err)
	}
	d := openDevice(t, sw.Path())
	defer d.Close()
	cert, err := x509.ParseCertificate(d.EKCertificate())
	if err != nil {
		t.Fatal(err)
	}
	certKey, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if want := attestation.EKHash(certKey); info.EKHash != want {
		t.Errorf("EK hash %s, want the hash of the EK certificate's key %s", info.EKHash, want)
	}
	if !strings.HasPrefix(info.EKHash, "sha256:") || len(info.EKHash) != len("sha256:")+64 {
		t.Errorf("EK hash %q is not sha256:<64 hex>", info.EKHash)
	}
	if want := ca.Intermediate.Subject.String(); info.EKCertificateIssuer != want {
		t.Errorf("issuer %q, want %q", info.EKCertificateIssuer, want)
	}
}

// TestDeviceIsTheSameAfterARestart: nothing is persisted, yet after a power
// cycle the EK and the AK are the same keys (both derived from the
// endorsement seed by a fixed template), so the enrolment still holds.
func TestDeviceIsTheSameAfterARestart(t *testing.T) {
	sw := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	d := openDevice(t, sw.Path())
	ek, ak := d.EKPublic(), d.AKPublic()
	_ = d.Close()
	if err := sw.Restart(); err != nil {
		t.Fatal(err)
	}
	d = openDevice(t, sw.Path())
	defer d.Close()
	if !bytes.Equal(d.EKPublic(), ek) || !bytes.Equal(d.AKPublic(), ak) {
		t.Error("the EK or the AK changed across a restart")
	}
	if handles := loaded(t, d.t); handles != 2 {
		t.Errorf("%d objects loaded while open, want the EK and the AK", handles)
	}
}

// TestDeviceLeavesNothingLoaded: a TPM reached without the kernel's resource
// manager keeps what a client leaves behind; after a failed activation and
// Close, no object and no session is left.
func TestDeviceLeavesNothingLoaded(t *testing.T) {
	sw := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	for range 3 {
		d := openDevice(t, sw.Path())
		if _, err := d.ActivateCredential([]byte("not a credential"), []byte("not a secret")); err == nil {
			t.Fatal("activated garbage")
		}
		if _, _, err := d.Quote(make([]byte, 32)); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tp, err := open(sw.Path()) // swtpm serves one connection at a time: after Close
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if n := loaded(t, tp); n != 0 {
		t.Errorf("%d objects or sessions left loaded", n)
	}
}

// loaded counts transient objects and sessions in the TPM.
func loaded(t *testing.T, tp transport.TPM) int {
	t.Helper()
	n := 0
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} { // transient, loaded and saved sessions
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		h, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range h.Handle {
			// Transient objects are 0x80xxxxxx; sessions, loaded or saved,
			// HMAC (0x02xxxxxx) or policy (0x03xxxxxx), are listed by both
			// session queries.
			if first == 0x80000000 && x>>24 == 0x80 || first != 0x80000000 && (x>>24 == 0x02 || x>>24 == 0x03) {
				n++
			}
		}
	}
	return n
}

func TestActivateCredentialOnlyForThisEKAndAK(t *testing.T) {
	sw := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	d := openDevice(t, sw.Path())
	defer d.Close()
	ekPub, err := d.ek.public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	otherName := append([]byte{0x00, 0x0b}, make([]byte, 32)...)
	otherName[5] = 1
	for _, tc := range []struct {
		name   string
		akName []byte
		ok     bool
	}{
		{"for this AK", d.ak.name.Buffer, true},
		{"for another object's name", otherName, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, enc, err := tpm2.CreateCredential(rand.Reader, ek, tc.akName, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.ActivateCredential(cred, enc)
			if tc.ok && (err != nil || !bytes.Equal(got, secret)) {
				t.Fatalf("activation: %x, %v", got, err)
			}
			if !tc.ok && err == nil {
				t.Fatal("the TPM activated a credential for another name")
			}
		})
	}
}

func TestQuoteIsSignedByTheAKOverTheQualifyingData(t *testing.T) {
	sw := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	d := openDevice(t, sw.Path())
	defer d.Close()
	qd := attestation.QualifyingData(bytes.Repeat([]byte{7}, 32), []byte("csr"))
	attestBytes, sigBytes, err := d.Quote(qd)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attestBytes)
	if err != nil {
		t.Fatal(err)
	}
	if a.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(a.ExtraData.Buffer, qd) {
		t.Errorf("attest type %x extraData %x, want a quote over %x", a.Type, a.ExtraData.Buffer, qd)
	}
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := sig.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	akPub, _ := d.ak.public.Contents()
	params, _ := akPub.Parameters.ECCDetail()
	point, _ := akPub.Unique.ECC()
	key, err := tpm2.ECDSAPub(params, point)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(attestBytes)
	if !ecdsa.Verify(key, digest[:], new(big.Int).SetBytes(ecc.SignatureR.Buffer), new(big.Int).SetBytes(ecc.SignatureS.Buffer)) {
		t.Error("the quote's signature does not verify with the AK")
	}
}

func TestOpenForms(t *testing.T) {
	sw := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	sock := unixProxy(t, sw.Addr)
	regular := filepath.Join(t.TempDir(), "tpm")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		ok         bool
	}{
		{"tcp://", sw.Path(), true},
		{"unix:", "unix:" + sock, true},
		{"unix://", "unix://" + sock, true},
		{"a regular file", regular, false},
		{"a missing device", filepath.Join(t.TempDir(), "tpmrm0"), false},
		{"nothing listening", "tcp://127.0.0.1:1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := open(tc.path)
			if !tc.ok {
				if err == nil {
					tp.Close()
					t.Fatal("opened")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(tp); err != nil {
				t.Fatalf("a command through %s: %v", tc.path, err)
			}
		})
	}
}

// unixProxy serves a unix socket that forwards to the swtpm at addr, as
// `swtpm socket --server type=unixio` would serve it.
func unixProxy(t *testing.T, addr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tpm.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return path
}
