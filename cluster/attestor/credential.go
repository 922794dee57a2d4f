package attestor

import (
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// makeCredential is TPM2_MakeCredential in software: secret, encrypted so
// that only the TPM holding ek's private key can decrypt it, and only by
// TPM2_ActivateCredential with the object named akName loaded. The EK's
// public area is rebuilt from the TCG default RSA 2048 EK template (its
// symmetric algorithm and name algorithm are part of the encryption), which
// is why only that EK is accepted.
func makeCredential(rand io.Reader, ek *rsa.PublicKey, akName tpm2.TPM2BName, secret []byte) (credential, encSecret []byte, err error) {
	pub := tpm2.RSAEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: ek.N.FillBytes(make([]byte, 256))})
	key, err := tpm2.ImportEncapsulationKey(&pub)
	if err != nil {
		return nil, nil, fmt.Errorf("importing the EK for MakeCredential: %w", err)
	}
	credential, encSecret, err = tpm2.CreateCredential(rand, key, akName.Buffer, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("making the credential: %w", err)
	}
	return credential, encSecret, nil
}
