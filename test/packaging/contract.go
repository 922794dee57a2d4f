package packaging

// Contract is every series the shipped rules and dashboard may use, with its
// type: what certagent exports (docs/metrics.md) and Prometheus' own up. The
// e2e suite checks that a running certagent exports each of them
// (TestPrometheusSeesCertagent).
var Contract = map[string]string{
	"certagent_certificate_expiry_seconds":                     "gauge",
	"certagent_certificate_not_after_timestamp_seconds":        "gauge",
	"certagent_certificate_renewal_deadline_timestamp_seconds": "gauge",
	"certagent_renewal_attempts_total":                         "counter",
	"certagent_renewal_errors_total":                           "counter",
	"certagent_csr_denied_total":                               "counter",
	"certagent_last_success_timestamp_seconds":                 "gauge",
	"certagent_pending_csr":                                    "gauge",
	"certagent_hook_errors_total":                              "counter",
	"certagent_ready":                                          "gauge",
	"certagent_build_info":                                     "gauge",
	// Kubelet-compatible: the kubelet's names, types and meaning.
	"kubelet_certificate_manager_client_ttl_seconds":             "gauge",
	"kubelet_certificate_manager_server_ttl_seconds":             "gauge",
	"kubelet_certificate_manager_client_expiration_renew_errors": "counter",
	"kubelet_server_expiration_renew_errors":                     "counter",
	// client_golang's names for the process and Go series.
	"process_resident_memory_bytes": "gauge",
	"process_cpu_seconds_total":     "counter",
	"process_open_fds":              "gauge",
	"process_start_time_seconds":    "gauge",
	"go_goroutines":                 "gauge",
	// Prometheus sets it for every target.
	"up": "gauge",
}
