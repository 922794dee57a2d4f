package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ekCertIndex is the NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile, low range). The ECC P-256 certificate would be at
// 0x01c0000a; 0x01c00016 holds the high-range P-384 one (swtpm's ECC EK).
const ekCertIndex = 0x01c00002

// nvChunk is how much of an NV index one TPM2_NV_Read asks for (every TPM's
// TPM_PT_NV_BUFFER_MAX is at least 512).
const nvChunk = 512

// key is a transient object loaded in the TPM.
type key struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPM2BPublic
}

func (k *key) flush(t transport.TPM) {
	_, _ = tpm2.FlushContext{FlushHandle: k.handle}.Execute(t)
}

// ek is the endorsement key: loaded, with its public key and certificate.
type ek struct {
	key
	pub  crypto.PublicKey
	pkix []byte
	cert []byte // DER, nil if the TPM has none
}

// loadEK recreates the EK from the TCG default RSA 2048 template (TPM2_
// CreatePrimary in the endorsement hierarchy gives the same key on every
// call) and reads its certificate from NV, if there is one. A certificate for
// another key (a TPM whose EK uses a non-default template) is an error rather
// than sent: the service would refuse it.
func loadEK(t transport.TPM) (*ek, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the EK from the default RSA template: %w", err)
	}
	e := &ek{key: key{handle: rsp.ObjectHandle, name: rsp.Name, public: rsp.OutPublic}}
	if err := e.fill(t); err != nil {
		e.flush(t)
		return nil, err
	}
	return e, nil
}

func (e *ek) fill(t transport.TPM) error {
	pub, err := e.public.Contents()
	if err != nil {
		return fmt.Errorf("reading the EK's public area: %w", err)
	}
	if e.pub, err = tpm2.Pub(*pub); err != nil {
		return fmt.Errorf("reading the EK's public key: %w", err)
	}
	if e.pkix, err = x509.MarshalPKIXPublicKey(e.pub); err != nil {
		return fmt.Errorf("encoding the EK's public key: %w", err)
	}
	der, err := readNV(t, ekCertIndex)
	if errors.Is(err, errNoIndex) {
		return nil // no EK certificate: enrolment by EK hash still works
	}
	if err != nil {
		return fmt.Errorf("reading the EK certificate from NV 0x%08x: %w", ekCertIndex, err)
	}
	if e.cert, err = trimDER(der); err != nil {
		return fmt.Errorf("EK certificate in NV 0x%08x: %w", ekCertIndex, err)
	}
	cert, err := x509.ParseCertificate(e.cert)
	if err != nil {
		return fmt.Errorf("parsing the EK certificate in NV 0x%08x: %w", ekCertIndex, err)
	}
	certPKIX, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || !bytes.Equal(certPKIX, e.pkix) {
		return fmt.Errorf("the EK certificate in NV 0x%08x is for another key than the EK of the default RSA template; this TPM's EK is not supported yet", ekCertIndex)
	}
	return nil
}

var errNoIndex = errors.New("NV index not defined")

// readNV reads a whole NV index, chunk by chunk, authorizing with the index's
// own (empty) auth value, as EK certificate indices allow.
func readNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, errNoIndex
		}
		return nil, fmt.Errorf("reading NV public: %w", err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("parsing NV public: %w", err)
	}
	var out []byte
	for off := 0; off < int(pub.DataSize); off += nvChunk {
		n := min(nvChunk, int(pub.DataSize)-off)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("reading NV at %d: %w", off, err)
		}
		out = append(out, r.Data.Buffer...)
	}
	return out, nil
}

// trimDER cuts the padding some TPMs leave after the certificate in its NV
// index: the DER element's own length says where it ends.
func trimDER(b []byte) ([]byte, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not DER: %w", err)
	}
	return raw.FullBytes, nil
}

// akTemplate is the attestation key: ECC NIST P-256, ECDSA with SHA-256,
// restricted to signing TPM-generated structures (so it cannot be made to
// sign a forged quote), fixedTPM and fixedParent (it cannot leave this TPM)
// and sensitiveDataOrigin (the TPM made its private key). The service checks
// each of these attributes in the public area it is sent.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// createAK creates the AK as a primary object in the endorsement hierarchy:
// no parent to load or authorize, the same hierarchy (and authorization) as
// the EK, and quick (an ECC primary takes milliseconds where an RSA one can
// take seconds). The same template gives the same key after a reboot; it is
// never persisted.
func createAK(t transport.TPM) (*key, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(akTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the attestation key: %w", err)
	}
	return &key{handle: rsp.ObjectHandle, name: rsp.Name, public: rsp.OutPublic}, nil
}
