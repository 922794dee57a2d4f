package observe

import (
	"math"
	"runtime"
	"time"

	"github.com/certagent/certagent/bootstrap"
)

// The metrics (docs/metrics.md), in Prometheus' text format 0.0.4. Written
// here rather than with client_golang: measured on this agent, client_golang
// and the protobuf it brings cost 2.4 MB of binary and 3-6 MiB of resident
// memory on every node (docs/metrics.md, "Why not client_golang").
// TestMetricsKubeletCompatible parses the output with Prometheus' parser.

// certSeries is one certagent_* series per certificate.
type certSeries struct {
	name, help, typ string
	value           func(s *Cert, now time.Time) float64
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

var certSeriesList = []certSeries{
	{"certagent_certificate_expiry_seconds", "Seconds until the stored certificate expires (negative once expired, 0 if none).", "gauge",
		func(s *Cert, now time.Time) float64 {
			if s.NotAfter.IsZero() {
				return 0
			}
			return s.NotAfter.Sub(now).Seconds()
		}},
	{"certagent_certificate_not_after_timestamp_seconds", "NotAfter of the stored certificate, Unix time (0 if none).", "gauge",
		func(s *Cert, _ time.Time) float64 { return unixSeconds(s.NotAfter) }},
	{"certagent_certificate_renewal_deadline_timestamp_seconds", "When the stored certificate is renewed, Unix time (0 if none).", "gauge",
		func(s *Cert, _ time.Time) float64 { return unixSeconds(s.Deadline) }},
	{"certagent_renewal_attempts_total", "Certificate requests made (bootstrap or renewal).", "counter",
		func(s *Cert, _ time.Time) float64 { return float64(s.Attempts) }},
	{"certagent_renewal_errors_total", "Failed attempts to obtain a certificate.", "counter",
		func(s *Cert, _ time.Time) float64 { return float64(s.Errors) }},
	{"certagent_csr_denied_total", "Certificate signing requests of this agent that were denied.", "counter",
		func(s *Cert, _ time.Time) float64 { return float64(s.Denied) }},
	{"certagent_last_success_timestamp_seconds", "When a certificate was last stored, Unix time (0 if never in this process).", "gauge",
		func(s *Cert, _ time.Time) float64 { return unixSeconds(s.LastSuccess) }},
	{"certagent_pending_csr", "1 while a CSR is waiting for approval or issuance.", "gauge",
		func(s *Cert, _ time.Time) float64 { return boolFloat(s.WaitingCSR != "") }},
	{"certagent_hook_errors_total", "Post-renew hooks that failed or timed out.", "counter",
		func(s *Cert, _ time.Time) float64 { return float64(s.HookErrors) }},
}

// The kubelet's certificate-manager series, with its names, help, types and
// meaning (k8s.io/kubernetes cmd/kubelet/app and pkg/kubelet/certificate), so
// that the alerts clusters already run on them (kubernetes-mixin) keep
// working when the kubelet's own rotation is off.
var (
	kubeletTTL = map[bootstrap.Kind][2]string{
		bootstrap.Client: {"kubelet_certificate_manager_client_ttl_seconds",
			"Gauge of the TTL (time-to-live) of the Kubelet's client certificate. The value is in seconds until certificate expiry (negative if already expired). If client certificate is invalid or unused, the value will be +INF."},
		bootstrap.Serving: {"kubelet_certificate_manager_server_ttl_seconds",
			"Gauge of the shortest TTL (time-to-live) of the Kubelet's serving certificate. The value is in seconds until certificate expiry (negative if already expired). If serving certificate is invalid or unused, the value will be +INF."},
	}
	kubeletRenewErrors = map[bootstrap.Kind][2]string{
		bootstrap.Client:  {"kubelet_certificate_manager_client_expiration_renew_errors", "Counter of certificate renewal errors."},
		bootstrap.Serving: {"kubelet_server_expiration_renew_errors", "Counter of certificate renewal errors."},
	}
)

// writeMetrics renders every series of c into w, the server's only with
// serving; version is certagent's. The state is copied under c's lock and
// rendered without it, and w is written by the caller: a slow scraper must
// not hold up the workers.
func WriteMetrics(w *Expo, c *Certs, serving bool, version string, now time.Time) {
	kinds := []bootstrap.Kind{bootstrap.Client}
	if serving {
		kinds = append(kinds, bootstrap.Serving)
	}
	c.mu.Lock()
	states := make([]Cert, len(kinds))
	for i, k := range kinds {
		states[i] = *c.cert(k)
	}
	ready := !states[0].NotAfter.IsZero() && now.Before(states[0].NotAfter) && c.identity.Accepted
	trust := c.trustCopy()
	c.mu.Unlock()

	for _, m := range certSeriesList {
		w.family(m.name, m.help, m.typ)
		for i, k := range kinds {
			w.sample(m.name, m.value(&states[i], now), "certificate", string(k))
		}
	}
	w.family("certagent_ready", "1 while the API server accepts kubelet.conf and its client certificate is valid.", "gauge")
	w.sample("certagent_ready", boolFloat(ready))
	w.family("certagent_build_info", "Always 1; the labels say which certagent runs.", "gauge")
	w.sample("certagent_build_info", 1, "version", version, "goversion", runtime.Version())
	for i, k := range kinds {
		ttl, errs := kubeletTTL[k], kubeletRenewErrors[k]
		w.family(ttl[0], ttl[1], "gauge")
		w.sample(ttl[0], kubeletTTLSeconds(states[i].NotAfter, now))
		w.family(errs[0], errs[1], "counter")
		w.sample(errs[0], float64(states[i].Errors))
	}
	writeTrustMetrics(w, kinds, states, trust)
	writeProcessMetrics(w)
}

// kubeletTTLSeconds is the kubelet's TTL gauge: whole seconds until
// notAfter (negative once expired), +Inf without a certificate.
func kubeletTTLSeconds(notAfter, now time.Time) float64 {
	if notAfter.IsZero() {
		return math.Inf(1)
	}
	return math.Trunc(notAfter.Sub(now).Seconds())
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
