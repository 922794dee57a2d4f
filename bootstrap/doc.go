// Package bootstrap turns a credential into an issued kubelet certificate on
// disk (node side): it makes and posts the CertificateSigningRequest, waits
// for it by watch, verifies what comes back, stores it in the kubelet's file
// layout, writes kubelet.conf and proves that the API server accepts it.
// Its rooms: apiclient (the requests), kubeconfig (reading kubeconfigs as
// the kubelet does), nodefault (failures of the node itself), tpm (the node
// half of TPM attestation).
//
// It owns the request's shape (subject, signer, usages, SANs), the pending key
// and the deterministic CSR name that make requests idempotent across
// restarts, and the error messages a person reads when the cluster says no.
// It does not decide when to renew (package rotate) nor talk to systemd
// (package agent).
package bootstrap
