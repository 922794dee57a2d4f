// Package bootstrap turns a credential into an issued kubelet certificate on
// disk: it makes and posts the CertificateSigningRequest, waits for it by
// watch, verifies what comes back, stores it in the kubelet's file layout and
// writes kubelet.conf.
//
// It owns the request's shape (subject, signer, usages, SANs), the pending key
// and the deterministic CSR name that make requests idempotent across
// restarts, and the error messages a person reads when the cluster says no.
// It does not decide when to renew (package rotate) nor talk to systemd
// (package agent).
package bootstrap
