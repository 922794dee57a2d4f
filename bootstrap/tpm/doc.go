// Package tpm is the node half of TPM attestation: it proves to the
// cluster's attestation service that this node holds the TPM enrolled for its
// name, and brings back the kubelet's client certificate for a CSR made on
// the node (the key never leaves the node, and never enters the TPM).
//
// What it does with the TPM, each time, with nothing kept between runs (so a
// reboot changes nothing):
//   - the endorsement key (EK): recreated from the TCG default RSA 2048
//     template (the same key every time, derived from the endorsement seed),
//     and its certificate read from NV index 0x01c00002 when the TPM has one;
//   - an attestation key (AK): an ECC P-256 restricted signing key, created
//     as a primary object in the endorsement hierarchy from a fixed template
//     (so also the same key every time, and nothing to persist);
//   - TPM2_ActivateCredential of the service's challenge (the EK's policy,
//     PolicySecret(endorsement), in a policy session), and TPM2_Quote by the
//     AK over protocol/attestation.QualifyingData(nonce, CSR).
//
// Every object and session it loads is transient and flushed before it
// returns, whatever happens. It never writes NV, never makes anything
// persistent and never changes a hierarchy's authorization; it needs the
// endorsement hierarchy's authorization to be empty (the default).
//
// It must not import the cluster half (cluster/...): the two meet only in
// protocol/attestation.
package tpm
