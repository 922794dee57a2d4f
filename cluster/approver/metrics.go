package approver

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the approver's Prometheus metrics: every decision it acted
// on, by verdict and rule, and how long deciding and writing it took.
type Metrics struct {
	registry  *prometheus.Registry
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// rulesByVerdict are the label pairs the decisions counter starts with at
// zero, so a rate() of a refusal that never happened yet is 0, not absent.
var rulesByVerdict = map[Verdict][]string{
	Approve: {RuleApproved},
	Wait:    {RuleNodeNotFound},
	Refuse: {RuleRequester, RuleRequest, RuleSubject, RuleUsages, RuleExpiration, RuleNoNames, RuleEmailOrURI,
		RuleIPNotNodeAddress, RuleIPOfAnotherNode, RuleDNSNotAllowed, RuleNotEnrolledAddress, RuleNotEnrolledDNSName},
}

// NewMetrics registers the approver's metrics, with Go's and the process's.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certagent_approver_decisions_total",
			Help: "Kubelet serving CSRs decided, by result (approve, refuse, wait) and reason (the rule). A pending CSR decided again counts again.",
		}, []string{"result", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certagent_approver_decision_duration_seconds",
			Help:    "Time to decide a CSR from the caches and write the decision (the approval or denial; an Event is sent asynchronously), by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
	}
	for v, rules := range rulesByVerdict {
		for _, r := range rules {
			m.decisions.WithLabelValues(v.String(), r)
		}
	}
	m.registry.MustRegister(m.decisions, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe counts d, acted on in took.
func (m *Metrics) observe(d Decision, took time.Duration) {
	if m == nil || d.Verdict == Ignore {
		return
	}
	m.decisions.WithLabelValues(d.Verdict.String(), d.Rule).Inc()
	m.duration.WithLabelValues(d.Verdict.String()).Observe(took.Seconds())
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
