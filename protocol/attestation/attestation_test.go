package attestation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testCSR = "-----BEGIN CERTIFICATE REQUEST-----\nAAEC\n-----END CERTIFICATE REQUEST-----\n"

func wantReason(t *testing.T, got *Error, want Reason) {
	t.Helper()
	if (got == nil) != (want == "") || got != nil && got.Reason != want {
		t.Fatalf("got %v, want %q", got, want)
	}
}

func TestBeginRequestValidate(t *testing.T) {
	good := BeginRequest{NodeName: "node-a.example", EKPublic: []byte{1}, AKPublic: []byte{1}, CSR: testCSR}
	for _, tc := range []struct {
		name   string
		change func(*BeginRequest)
		want   Reason
	}{
		{"complete, no EK certificate", func(*BeginRequest) {}, ""},
		{"with an EK certificate", func(m *BeginRequest) { m.EKCertificate = make([]byte, 1500) }, ""},
		{"no node name", func(m *BeginRequest) { m.NodeName = "" }, ReasonBadRequest},
		{"a node name with a slash", func(m *BeginRequest) { m.NodeName = "a/b" }, ReasonBadRequest},
		{"no EK", func(m *BeginRequest) { m.EKPublic = nil }, ReasonBadRequest},
		{"an EK certificate too large", func(m *BeginRequest) { m.EKCertificate = make([]byte, 5000) }, ReasonBadRequest},
		{"no AK", func(m *BeginRequest) { m.AKPublic = nil }, ReasonBadRequest},
		{"no CSR", func(m *BeginRequest) { m.CSR = "" }, ReasonBadRequest},
		{"a certificate for a CSR", func(m *BeginRequest) { m.CSR = strings.ReplaceAll(testCSR, "CERTIFICATE REQUEST", "CERTIFICATE") }, ReasonBadRequest},
		{"two CSRs", func(m *BeginRequest) { m.CSR = testCSR + testCSR }, ReasonBadRequest},
		{"text after the CSR", func(m *BeginRequest) { m.CSR = testCSR + "trailer" }, ReasonBadRequest},
		{"a CSR too large", func(m *BeginRequest) { m.CSR = testCSR + strings.Repeat(" ", 9000) }, ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.change(&m)
			wantReason(t, m.Validate(), tc.want)
		})
	}
}

func TestBeginResponseValidate(t *testing.T) {
	good := BeginResponse{SessionID: strings.Repeat("A", 32), Credential: []byte{1}, EncryptedSecret: []byte{1}, Nonce: make([]byte, 32), Expires: time.Now()}
	for _, tc := range []struct {
		name   string
		change func(*BeginResponse)
		want   Reason
	}{
		{"complete", func(*BeginResponse) {}, ""},
		{"a nonce of 31 bytes", func(m *BeginResponse) { m.Nonce = make([]byte, 31) }, ReasonBadRequest},
		{"no credential", func(m *BeginResponse) { m.Credential = nil }, ReasonBadRequest},
		{"no secret", func(m *BeginResponse) { m.EncryptedSecret = nil }, ReasonBadRequest},
		{"a short session id", func(m *BeginResponse) { m.SessionID = "abc" }, ReasonBadRequest},
		{"no expiry", func(m *BeginResponse) { m.Expires = time.Time{} }, ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.change(&m)
			wantReason(t, m.Validate(), tc.want)
		})
	}
}

func TestFinishValidate(t *testing.T) {
	good := FinishRequest{SessionID: strings.Repeat("a-_9", 8), Secret: make([]byte, 32), Attest: []byte{1}, Signature: []byte{1}}
	for _, tc := range []struct {
		name   string
		change func(*FinishRequest)
		want   Reason
	}{
		{"complete", func(*FinishRequest) {}, ""},
		{"a session id outside base64url", func(m *FinishRequest) { m.SessionID = strings.Repeat("a", 31) + "/" }, ReasonBadRequest},
		{"a session id too long", func(m *FinishRequest) { m.SessionID = strings.Repeat("a", 65) }, ReasonBadRequest},
		{"no secret", func(m *FinishRequest) { m.Secret = nil }, ReasonBadRequest},
		{"a secret too long", func(m *FinishRequest) { m.Secret = make([]byte, 65) }, ReasonBadRequest},
		{"no attestation", func(m *FinishRequest) { m.Attest = nil }, ReasonBadRequest},
		{"no signature", func(m *FinishRequest) { m.Signature = nil }, ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.change(&m)
			wantReason(t, m.Validate(), tc.want)
		})
	}
	wantReason(t, (&FinishResponse{CertificateChain: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}).Validate(), "")
	wantReason(t, (&FinishResponse{CertificateChain: testCSR}).Validate(), ReasonBadRequest)
	wantReason(t, (&FinishResponse{}).Validate(), ReasonBadRequest)
}

func TestValidateNodeName(t *testing.T) {
	for name, ok := range map[string]bool{
		"node-a": true, "node-a.example.com": true, "10.0.0.1": true, strings.Repeat("a", 63): true,
		"": false, "Node-A": false, "-a": false, "a-": false, "a..b": false, ".a": false, "a_b": false,
		strings.Repeat("a", 64): false, strings.Repeat("a.", 127) + "ab": false,
	} {
		if got := ValidateNodeName(name) == nil; got != ok {
			t.Errorf("ValidateNodeName(%q) ok=%t, want %t", name, got, ok)
		}
	}
}

func TestEKHash(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 test vector.
	if got, want := EKHash([]byte("abc")), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("EKHash = %s, want %s", got, want)
	}
}

func TestQualifyingData(t *testing.T) {
	nonce := []byte(strings.Repeat("n", 32))
	csr := []byte("csr der")
	inner := sha256.Sum256(csr)
	want := sha256.Sum256(append(append([]byte(nil), nonce...), inner[:]...))
	if got := QualifyingData(nonce, csr); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		t.Errorf("QualifyingData = %x, want SHA-256(nonce || SHA-256(csr)) = %x", got, want)
	}
	if string(QualifyingData(nonce, []byte("other"))) == string(QualifyingData(nonce, csr)) {
		t.Error("another CSR gives the same qualifying data")
	}
}

func TestReasons(t *testing.T) {
	for _, tc := range []struct {
		reason    Reason
		status    int
		retryable bool
	}{
		{ReasonBadRequest, http.StatusBadRequest, false},
		{ReasonUnknownEK, http.StatusForbidden, false},
		{ReasonUntrustedEKCA, http.StatusForbidden, false},
		{ReasonNameMismatch, http.StatusForbidden, false},
		{ReasonBadSecret, http.StatusForbidden, false},
		{ReasonReplayed, http.StatusConflict, false},
		{ReasonStaleNonce, http.StatusGone, true},
		{ReasonUnknownSession, http.StatusNotFound, true},
		{ReasonBusy, http.StatusTooManyRequests, true},
		{ReasonIssueFailed, http.StatusBadGateway, true},
		{ReasonInternal, http.StatusInternalServerError, true},
	} {
		if got := tc.reason.HTTPStatus(); got != tc.status {
			t.Errorf("%s: status %d, want %d", tc.reason, got, tc.status)
		}
		if got := tc.reason.Retryable(); got != tc.retryable {
			t.Errorf("%s: retryable %t, want %t", tc.reason, got, tc.retryable)
		}
	}
}

func TestBeginRequestExpirationSeconds(t *testing.T) {
	good := BeginRequest{NodeName: "node-a", EKPublic: []byte{1}, AKPublic: []byte{1}, CSR: testCSR}
	for _, tc := range []struct {
		seconds int32
		want    Reason
	}{
		{0, ""},
		{MinExpirationSeconds, ""},
		{86400, ""},
		{MinExpirationSeconds - 1, ReasonBadRequest},
		{-1, ReasonBadRequest},
	} {
		m := good
		m.ExpirationSeconds = tc.seconds
		wantReason(t, m.Validate(), tc.want)
	}
}

func TestReasonsListsEveryReason(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if seen[r] {
			t.Errorf("%s listed twice", r)
		}
		seen[r] = true
	}
	// Every reason has a distinct status or retry rule checked in
	// TestReasons; this pins the count so a new reason is added here too.
	if len(Reasons) != 17 {
		t.Errorf("Reasons has %d entries; add the new reason to it", len(Reasons))
	}
}

func TestTPMEnrollment(t *testing.T) {
	hash := EKHash([]byte("abc"))
	good := NewTPMEnrollment("node-a", hash, "CN=vendor")
	wantReason(t, good.Validate(), "")
	for _, tc := range []struct {
		name   string
		change func(*TPMEnrollment)
	}{
		{"another kind", func(e *TPMEnrollment) { e.Kind = "Node" }},
		{"another version", func(e *TPMEnrollment) { e.APIVersion = EnrollmentGroup + "/v1" }},
		{"no name", func(e *TPMEnrollment) { e.Metadata.Name = "" }},
		{"an upper-case name", func(e *TPMEnrollment) { e.Metadata.Name = "Node-A" }},
		{"no hash", func(e *TPMEnrollment) { e.Spec.EKPublicKeyHash = "" }},
		{"hex without sha256:", func(e *TPMEnrollment) { e.Spec.EKPublicKeyHash = hash[len("sha256:"):] }},
		{"upper-case hex", func(e *TPMEnrollment) { e.Spec.EKPublicKeyHash = strings.ToUpper(hash) }},
		{"a short hash", func(e *TPMEnrollment) { e.Spec.EKPublicKeyHash = hash[:70] }},
		{"a non-hex digit", func(e *TPMEnrollment) { e.Spec.EKPublicKeyHash = hash[:70] + "g" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := good
			tc.change(&e)
			wantReason(t, e.Validate(), ReasonBadRequest)
		})
	}
	// The record's JSON is the custom resource's.
	data, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"attestation.certagent.io/v1alpha1","kind":"TPMEnrollment","metadata":{"name":"node-a"},"spec":{"ekPublicKeyHash":"` + hash + `","ekCertificateIssuer":"CN=vendor"}}`
	if string(data) != want {
		t.Errorf("JSON\n%s\nwant\n%s", data, want)
	}
}

func TestEKHashPatternMatchesValidateEKHash(t *testing.T) {
	re := regexp.MustCompile(EKHashPattern)
	hash := EKHash([]byte("abc"))
	for _, s := range []string{hash, strings.ToUpper(hash), hash[7:], hash[:70], hash + "0", "sha256:" + strings.Repeat("g", 64), "sha1:" + hash[7:]} {
		if got, want := re.MatchString(s), ValidateEKHash(s) == nil; got != want {
			t.Errorf("%q: pattern %t, ValidateEKHash %t", s, got, want)
		}
	}
}

func TestServiceCAHash(t *testing.T) {
	// The form kubeadm prints for --discovery-token-ca-cert-hash: the
	// SHA-256 of the certificate's SubjectPublicKeyInfo, not of the
	// certificate.
	c := &x509.Certificate{RawSubjectPublicKeyInfo: []byte("abc"), Raw: []byte("whole certificate")}
	if got, want := ServiceCAHash(c), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("ServiceCAHash = %s, want %s", got, want)
	}
}
