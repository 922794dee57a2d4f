package observe

import (
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/bootstrap"
)

// TrustState is what the daemon knows of the trust it follows
// (trust.follow, docs/ca-rotation.md).
type TrustState struct {
	Following bool
	// CAs counts the CAs of each file the agent keeps, by its role (TrustFileCA,
	// TrustFileKubeletClientCA); absent: not written by this process.
	CAs map[string]int
	// Changed is when each file last changed (its modification time).
	Changed map[string]time.Time
	// Refused counts published bundles refused.
	Refused uint64
}

// The files the agent keeps when following, as the metrics name them.
const (
	TrustFileCA              = "ca"
	TrustFileKubeletClientCA = "kubelet-client-ca"
)

// UpdateTrust changes the trust state.
func (c *Certs) UpdateTrust(f func(*TrustState)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trust.CAs == nil {
		c.trust.CAs, c.trust.Changed = map[string]int{}, map[string]time.Time{}
	}
	f(&c.trust)
}

// trustCopy is a copy of the trust state; c.mu is held.
func (c *Certs) trustCopy() TrustState {
	t := c.trust
	t.CAs, t.Changed = maps.Clone(c.trust.CAs), maps.Clone(c.trust.Changed)
	return t
}

// writeTrustMetrics renders the CA each certificate chains to and, when
// following, the trust files and refusals.
func writeTrustMetrics(w *Expo, kinds []bootstrap.Kind, states []Cert, t TrustState) {
	w.family("certagent_certificate_ca_info", "Always 1 for each stored certificate; the labels name the CA that signed it (ca_sha256: the first 16 hex digits of the SHA-256 of the CA certificate, empty when the CA is not among those the node knows).", "gauge")
	for i, k := range kinds {
		if states[i].CA != "" {
			w.sample("certagent_certificate_ca_info", 1, "certificate", string(k), "ca", states[i].CA, "ca_sha256", states[i].CASHA)
		}
	}
	if !t.Following {
		return
	}
	w.family("certagent_trust_cas", "CAs in each trust file certagent keeps from the cluster's published trust (file: ca, kubelet.conf's CA; kubelet-client-ca, the kubelet's clientCAFile).", "gauge")
	for _, f := range []string{TrustFileCA, TrustFileKubeletClientCA} {
		if n, ok := t.CAs[f]; ok {
			w.sample("certagent_trust_cas", float64(n), "file", f)
		}
	}
	w.family("certagent_trust_changed_timestamp_seconds", "When each trust file certagent keeps last changed, Unix time: a kubelet re-reads kubelet.conf's CA file and its client certificate up to 5 minutes later.", "gauge")
	for _, f := range []string{TrustFileCA, TrustFileKubeletClientCA} {
		if at, ok := t.Changed[f]; ok {
			w.sample("certagent_trust_changed_timestamp_seconds", unixSeconds(at), "file", f)
		}
	}
	w.family("certagent_trust_refused_total", "Published trust bundles refused (empty, malformed, not CAs, or not trusting the API server the node talks to).", "counter")
	w.sample("certagent_trust_refused_total", float64(t.Refused))
}

// Event reasons of the trust follower.
const (
	ReasonTrustUpdated     = "TrustBundleUpdated"
	ReasonTrustRefused     = "TrustBundleRefused"
	ReasonReissueScheduled = "CertificateReissueScheduled"
)

// TrustUpdated tells that the file (what, for people) now holds cas.
func (r *Events) TrustUpdated(what, path, cas string) {
	r.record(nodeEvent{typ: corev1.EventTypeNormal, reason: ReasonTrustUpdated, action: "UpdateTrust",
		note: fmt.Sprintf("%s %s now holds the cluster's published CAs: %s", what, path, cas)})
}

// TrustRefused tells that published trust was refused and nothing changed.
func (r *Events) TrustRefused(what string, err error) {
	r.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonTrustRefused, action: "UpdateTrust",
		note: fmt.Sprintf("%s kept as it was: %v", what, err)})
}

// ReissueScheduled tells that kind's certificate will be re-issued (after
// in, for people) because its signer issues from ca now.
func (r *Events) ReissueScheduled(kind bootstrap.Kind, ca, in string) {
	r.record(nodeEvent{typ: corev1.EventTypeNormal, reason: ReasonReissueScheduled, action: "RequestCertificate", kind: kind,
		note: fmt.Sprintf("the %s is re-issued in %s: its signer issues from CA %s now", certName(kind), in, ca)})
}
