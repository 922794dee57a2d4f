package attestation

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/protocol/attestation"
)

// The exchange step by step, as an attacker who captured one would replay it.

func beginRequest(t *testing.T, dev *tpm.Device, name string, csrPEM []byte) attestation.BeginRequest {
	t.Helper()
	return attestation.BeginRequest{NodeName: name, EKPublic: dev.EKPublic(), EKCertificate: dev.EKCertificate(), AKPublic: dev.AKPublic(), CSR: string(csrPEM)}
}

func begin(t *testing.T, s *service, req attestation.BeginRequest) attestation.BeginResponse {
	t.Helper()
	_, refusal, data := post(t, s, attestation.BeginPath, req)
	if refusal != nil {
		t.Fatalf("begin refused: %+v", refusal)
	}
	var ch attestation.BeginResponse
	if err := json.Unmarshal(data, &ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

// finishFor answers the challenge with dev's TPM, honestly.
func finishFor(t *testing.T, dev *tpm.Device, ch attestation.BeginResponse, csrPEM []byte) attestation.FinishRequest {
	t.Helper()
	secret, err := dev.ActivateCredential(ch.Credential, ch.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	der, rerr := attestation.CSRDER(string(csrPEM))
	if rerr != nil {
		t.Fatal(rerr)
	}
	attest, sig, err := dev.Quote(attestation.QualifyingData(ch.Nonce, der))
	if err != nil {
		t.Fatal(err)
	}
	return attestation.FinishRequest{SessionID: ch.SessionID, Secret: secret, Attest: attest, Signature: sig}
}

// replayedFinish: a node's finish, captured and sent again, is refused
// (sessions are single use); the node's one certificate stays the only one.
func replayedFinish(t *testing.T) {
	n := newNode(t, "tpm-replay", vendor)
	n.enrol(n.name)
	dev, err := tpm.OpenDevice(n.tpm.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	fin := finishFor(t, dev, begin(t, svc, beginRequest(t, dev, n.name, n.csrPEM)), n.csrPEM)
	if status, refusal, _ := post(t, svc, attestation.FinishPath, fin); status != http.StatusOK {
		t.Fatalf("the node's own finish: %d %+v", status, refusal)
	}
	csrs := allCSRs(t)
	status, refusal, _ := post(t, svc, attestation.FinishPath, fin)
	if status != http.StatusConflict || refusal == nil || refusal.Reason != attestation.ReasonReplayed {
		t.Fatalf("the replayed finish: %d %+v, want 409 %s", status, refusal, attestation.ReasonReplayed)
	}
	refusalLogged(t, svc, attestation.ReasonReplayed, n.name)
	if allCSRs(t) != csrs || len(csrsFor(t, n.name)) != 1 {
		t.Errorf("the replay made a CSR")
	}
	waitEvent(t, n.name, "Warning AttestationRefused", "replayed at finish")
}

// beginFromSecondTPM: everything node A sends is public; an attacker with
// TPM B replays A's begin verbatim. The challenge is encrypted to A's EK:
// TPM B cannot activate it, and the secret it sends is wrong.
func beginFromSecondTPM(t *testing.T) {
	a, b := newNode(t, "tpm-victim", vendor), newNode(t, "tpm-attacker", vendor)
	a.enrol(a.name)
	devA, err := tpm.OpenDevice(a.tpm.Path())
	if err != nil {
		t.Fatal(err)
	}
	beginA := beginRequest(t, devA, a.name, a.csrPEM)
	_ = devA.Close()
	devB, err := tpm.OpenDevice(b.tpm.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer devB.Close()

	ch := begin(t, svc, beginA)
	if _, err := devB.ActivateCredential(ch.Credential, ch.EncryptedSecret); err == nil {
		t.Fatal("TPM B activated a credential made for TPM A's EK")
	}
	der, _ := attestation.CSRDER(beginA.CSR)
	attest, sig, err := devB.Quote(attestation.QualifyingData(ch.Nonce, der))
	if err != nil {
		t.Fatal(err)
	}
	expectRefusal(t, attestation.ReasonBadSecret, a.name, func() error {
		_, refusal, _ := post(t, svc, attestation.FinishPath, attestation.FinishRequest{
			SessionID: ch.SessionID, Secret: make([]byte, 32), Attest: attest, Signature: sig,
		})
		if refusal == nil {
			return nil
		}
		return refusal
	})
	waitEvent(t, a.name, "Warning AttestationRefused", "bad_secret")
}
