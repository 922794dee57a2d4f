package attestor

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
)

// wantReason fails t unless got refuses with want ("" = accepted).
func wantReason(t *testing.T, got *attestation.Error, want attestation.Reason) {
	t.Helper()
	switch {
	case want == "" && got != nil:
		t.Fatalf("refused (%s: %s), want accepted", got.Reason, got.Message)
	case want != "" && got == nil:
		t.Fatalf("accepted, want refused with %s", want)
	case want != "" && got.Reason != want:
		t.Fatalf("refused with %s (%s), want %s", got.Reason, got.Message, want)
	}
}

func TestParseEKPublic(t *testing.T) {
	smallE := rsaKey(t, 0).PublicKey
	smallE.E = 3
	for _, tc := range []struct {
		name string
		der  []byte
		want attestation.Reason
	}{
		{"RSA 2048, exponent 65537", pkixDER(t, &rsaKey(t, 0).PublicKey), ""},
		{"exponent 3", pkixDER(t, &smallE), attestation.ReasonBadRequest},
		{"an ECC key", pkixDER(t, &ecKey(t, elliptic.P256()).PublicKey), attestation.ReasonBadRequest},
		{"not PKIX", []byte("not a key"), attestation.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, canonical, got := parseEKPublic(tc.der)
			wantReason(t, got, tc.want)
			if got == nil && string(canonical) != string(tc.der) {
				t.Error("the canonical encoding of a canonical key differs")
			}
		})
	}
}

func TestCheckEKCertMatches(t *testing.T) {
	ca := newTestCA(t, "vendor", nil)
	ek := &rsaKey(t, 0).PublicKey
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want attestation.Reason
	}{
		{"no certificate", nil, ""},
		{"certificate for the EK", ekCert(t, ca, ek, time.Now().Add(time.Hour)), ""},
		{"certificate for another key", ekCert(t, ca, &rsaKey(t, 1).PublicKey, time.Now().Add(time.Hour)), attestation.ReasonEKCertMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkEKCertMatches(tc.cert, ek), tc.want)
		})
	}
}

func TestCheckEKCertChain(t *testing.T) {
	root := newTestCA(t, "vendor root", nil)
	issuer := newTestCA(t, "vendor EK issuer", root)
	rogue := newTestCA(t, "rogue", nil)
	ek := &rsaKey(t, 0).PublicKey
	now := time.Now()
	good := ekCert(t, issuer, ek, now.Add(time.Hour))
	policy := &ManufacturerCAs{Roots: pool(root), Intermediates: pool(issuer)}
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		policy *ManufacturerCAs
		now    time.Time
		want   attestation.Reason
	}{
		{"policy off, no certificate", nil, nil, now, ""},
		{"policy off, untrusted certificate", ekCert(t, rogue, ek, now.Add(time.Hour)), nil, now, ""},
		{"chains through the intermediate (critical TCG SAN accepted)", good, policy, now, ""},
		{"no certificate", nil, policy, now, attestation.ReasonUntrustedEKCA},
		{"signed by another CA", ekCert(t, rogue, ek, now.Add(time.Hour)), policy, now, attestation.ReasonUntrustedEKCA},
		{"intermediate not given", good, &ManufacturerCAs{Roots: pool(root)}, now, attestation.ReasonUntrustedEKCA},
		{"the roots are another maker's", good, &ManufacturerCAs{Roots: pool(rogue), Intermediates: pool(issuer)}, now, attestation.ReasonUntrustedEKCA},
		{"expired", good, policy, now.Add(2 * time.Hour), attestation.ReasonUntrustedEKCA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkEKCertChain(tc.cert, tc.policy, tc.now), tc.want)
		})
	}
	if len(good.UnhandledCriticalExtensions) == 0 {
		t.Fatal("the fixture's SAN should be left unhandled by crypto/x509, as real EK certificates' are")
	}
}

type failingEnrollments struct{}

func (failingEnrollments) NodeName(context.Context, string) (string, bool, error) {
	return "", false, errors.New("apiserver unreachable")
}

// refusingEnrollments refuses every lookup, as an ambiguous enrolment does.
type refusingEnrollments struct{}

func (refusingEnrollments) NodeName(context.Context, string) (string, bool, error) {
	return "", false, fmt.Errorf("looking up: %w", attestation.Refuse(attestation.ReasonAmbiguousEnrollment, "enrolled twice"))
}

func TestLookupEnrolledName(t *testing.T) {
	enrolled := StaticEnrollments{"sha256:aa": "node-a"}
	for _, tc := range []struct {
		name     string
		enrolled Enrollments
		ekHash   string
		wantName string
		want     attestation.Reason
	}{
		{"enrolled", enrolled, "sha256:aa", "node-a", ""},
		{"not enrolled", enrolled, "sha256:bb", "", attestation.ReasonUnknownEK},
		{"lookup fails", failingEnrollments{}, "sha256:aa", "", attestation.ReasonInternal},
		{"the enrolment refuses (wrapped)", refusingEnrollments{}, "sha256:aa", "", attestation.ReasonAmbiguousEnrollment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, got, _ := lookupEnrolledName(context.Background(), tc.enrolled, tc.ekHash)
			wantReason(t, got, tc.want)
			if name != tc.wantName {
				t.Errorf("name %q, want %q", name, tc.wantName)
			}
		})
	}
}

func TestCheckNameMatches(t *testing.T) {
	for _, tc := range []struct {
		enrolled, asked string
		want            attestation.Reason
	}{
		{"node-a", "node-a", ""},
		{"node-a", "node-b", attestation.ReasonNameMismatch},
		{"node-a", "node-a.example", attestation.ReasonNameMismatch},
		{"node-a", "Node-A", attestation.ReasonNameMismatch},
	} {
		t.Run(tc.enrolled+" asks "+tc.asked, func(t *testing.T) {
			wantReason(t, checkNameMatches(tc.enrolled, tc.asked), tc.want)
		})
	}
}
