package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Device is an open TPM with the EK and the AK loaded: the TPM side of
// one exchange. Attest uses it; tests and tools that need the steps one by
// one (to play an attacker, or to stop between them) use it directly.
// Close flushes both keys and closes the TPM.
type Device struct {
	t  transport.TPMCloser
	ek *ek
	ak *key
}

// OpenDevice opens the TPM at path (see Config.TPMPath), loads the EK with
// its certificate and creates the AK.
func OpenDevice(path string) (*Device, error) {
	t, err := open(path)
	if err != nil {
		return nil, err
	}
	d := &Device{t: t}
	if d.ek, err = loadEK(t); err != nil {
		_ = d.Close()
		return nil, err
	}
	if d.ak, err = createAK(t); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

// EKPublic is the EK's public key, PKIX DER.
func (d *Device) EKPublic() []byte { return d.ek.pkix }

// EKCertificate is the EK certificate from NV (DER), nil if the TPM has none.
func (d *Device) EKCertificate() []byte { return d.ek.cert }

// AKPublic is the AK's public area, a marshalled TPM2B_PUBLIC.
func (d *Device) AKPublic() []byte { return tpm2.Marshal(d.ak.public) }

// ActivateCredential returns the secret of a credential made for this TPM's
// EK and AK (TPM2_ActivateCredential); the TPM refuses any other.
func (d *Device) ActivateCredential(credential, encSecret []byte) ([]byte, error) {
	return activate(d.t, d.ek, d.ak, credential, encSecret)
}

// Quote returns a TPM2_Quote by the AK with qualifyingData as its extraData:
// the TPMS_ATTEST and its TPMT_SIGNATURE, both marshalled.
func (d *Device) Quote(qualifyingData []byte) (attest, sig []byte, err error) {
	return quote(d.t, d.ak, qualifyingData)
}

// Close flushes the AK and the EK and closes the TPM.
func (d *Device) Close() error {
	if d.ak != nil {
		d.ak.flush(d.t)
	}
	if d.ek != nil {
		d.ek.flush(d.t)
	}
	if err := d.t.Close(); err != nil {
		return fmt.Errorf("closing the TPM: %w", err)
	}
	return nil
}
