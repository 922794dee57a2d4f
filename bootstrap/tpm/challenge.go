package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// activate runs TPM2_ActivateCredential: the TPM decrypts the service's
// credential with the EK, and releases the secret only if the AK named in it
// is loaded in this TPM. The EK's default policy is PolicySecret(endorsement),
// satisfied in a policy session that is flushed on every path.
func activate(t transport.TPM, e *ek, ak *key, credential, encSecret []byte) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("starting the EK policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(t); err != nil {
		return nil, fmt.Errorf("satisfying the EK policy (PolicySecret with the endorsement hierarchy; is its authorization set?): %w", err)
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: e.handle, Name: e.name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("activating the credential (it is for another EK or AK than this TPM's): %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// quote has the AK sign a TPM2_Quote whose qualifying data is qd. A
// restricted signing key signs only what the TPM itself generated (TPMS_ATTEST
// starting with TPM_GENERATED_VALUE), so a valid signature proves the TPM
// produced this attestation over qd. No PCRs are selected: the quote proves
// freshness and the CSR binding, not boot state (a later policy may add PCRs
// with the event log).
func quote(t transport.TPM, ak *key, qd []byte) (attest, sig []byte, err error) {
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: qd},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      tpm2.TPMLPCRSelection{},
	}.Execute(t)
	if err != nil {
		return nil, nil, fmt.Errorf("quoting with the attestation key: %w", err)
	}
	return rsp.Quoted.Bytes(), tpm2.Marshal(rsp.Signature), nil
}
