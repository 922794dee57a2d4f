package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FuzzCSRStatus decodes arbitrary bytes as a CertificateSigningRequest (JSON)
// and checks issued, Pending and approvalManager against what they promise:
// never both a certificate and an error; done only for an Approved CSR with a
// certificate and no Denied or Failed condition, returning status.certificate;
// the first Denied or Failed condition always ends the wait with a *CSRError
// of that outcome, reason and message (a denial naming approvalManager); a
// UID mismatch is OutcomeDeleted; Pending is "neither done nor an error".
func FuzzCSRStatus(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"name":"node-csr-a","uid":"u1"},"spec":{"signerName":"kubernetes.io/kube-apiserver-client-kubelet"},"status":{}}`,
		`{"metadata":{"name":"node-csr-a","uid":"u1"},"status":{"conditions":[{"type":"Approved","status":"True","reason":"AutoApproved"}],"certificate":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}}`,
		`{"metadata":{"name":"node-csr-a","uid":"u1"},"status":{"conditions":[{"type":"Approved","status":"True"}]}}`,
		`{"metadata":{"name":"node-csr-a","uid":"u1","managedFields":[{"manager":"kube-controller-manager","operation":"Update","subresource":"approval","time":"2030-01-01T00:00:00Z"},{"manager":"kubectl","operation":"Update","subresource":"approval","time":"2030-01-01T00:05:00Z"},{"manager":"kubelet","operation":"Update","time":"2030-01-02T00:00:00Z"}]},"status":{"conditions":[{"type":"Denied","status":"True","reason":"NotOurNode","message":"wrong node"}]}}`,
		`{"metadata":{"name":"node-csr-a","uid":"u1"},"status":{"conditions":[{"type":"Approved","status":"True"},{"type":"Failed","status":"True","reason":"SignerValidationFailure","message":"bad"}],"certificate":"eA=="}}`,
		`{"metadata":{"name":"node-csr-a"},"status":{"conditions":[{"type":"Approved","status":"False"}],"certificate":"eA=="}}`,
		`{}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var csr certificatesv1.CertificateSigningRequest
		if json.Unmarshal(data, &csr) != nil {
			t.Skip()
		}
		var firstFinal *certificatesv1.CertificateSigningRequestCondition
		approved := false
		for i, c := range csr.Status.Conditions {
			if firstFinal == nil && (c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed) {
				firstFinal = &csr.Status.Conditions[i]
			}
			approved = approved || c.Type == certificatesv1.CertificateApproved
		}

		for _, uid := range []types.UID{csr.UID, "other-uid", ""} {
			cert, done, err := issued(&csr, uid)
			var csrErr *CSRError
			switch {
			case done && err != nil:
				t.Fatalf("issued(%q) = done and error %v", uid, err)
			case err != nil && (cert != nil || !errors.As(err, &csrErr) || csrErr.Name != csr.Name):
				t.Fatalf("issued(%q) = %q, %v: want no bytes and a *CSRError for %q", uid, cert, err, csr.Name)
			case !done && err == nil && cert != nil:
				t.Fatalf("issued(%q) = bytes while pending", uid)
			case uid != "" && uid != csr.UID:
				if err == nil || csrErr.Outcome != OutcomeDeleted {
					t.Fatalf("issued(%q) of a CSR with UID %q = %v, want OutcomeDeleted", uid, csr.UID, err)
				}
			case firstFinal != nil:
				want := OutcomeDenied
				if firstFinal.Type == certificatesv1.CertificateFailed {
					want = OutcomeFailed
				}
				if err == nil || csrErr.Outcome != want || csrErr.Reason != firstFinal.Reason || csrErr.Message != firstFinal.Message {
					t.Fatalf("issued(%q) with first final condition %+v = %v", uid, *firstFinal, err)
				}
				if want == OutcomeDenied && csrErr.By != approvalManager(&csr) {
					t.Fatalf("denial by %q, approvalManager says %q", csrErr.By, approvalManager(&csr))
				}
			case done != (approved && len(csr.Status.Certificate) > 0) || err != nil:
				t.Fatalf("issued(%q) = done %v, error %v for approved=%v with %d certificate bytes", uid, done, err, approved, len(csr.Status.Certificate))
			case done && !bytes.Equal(cert, csr.Status.Certificate):
				t.Fatalf("issued(%q) returned other bytes than status.certificate", uid)
			}
			if uid == "" {
				if p := Pending(&csr); p != (!done && err == nil) {
					t.Fatalf("Pending = %v, but issued = done %v, error %v", p, done, err)
				}
			}
		}

		who := approvalManager(&csr)
		managers := []string{}
		var latest, whoLatest time.Time // newest approval write, newest by who
		for _, mf := range csr.ManagedFields {
			if mf.Subresource != "approval" || mf.Manager == "" {
				continue // an unnamed writer names nobody
			}
			managers = append(managers, mf.Manager)
			var at time.Time
			if mf.Time != nil {
				at = mf.Time.Time
			}
			if at.After(latest) {
				latest = at
			}
			if mf.Manager == who && at.After(whoLatest) {
				whoLatest = at
			}
		}
		if who != "" && !slices.Contains(managers, who) {
			t.Fatalf("approvalManager = %q, not among the approval managers %q", who, managers)
		}
		if len(managers) > 0 && who == "" {
			t.Fatalf("approvalManager found nobody among %q", managers)
		}
		if whoLatest.Before(latest) {
			t.Fatalf("approvalManager = %q (last at %s), but an approval was written at %s", who, whoLatest, latest)
		}
	})
}
