package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/certagent/certagent/cluster/attestor"
	"github.com/certagent/certagent/protocol/attestation"
)

// The values of the attempts counter's result label.
const (
	resultChallenged = "challenged" // begin passed: a challenge was sent
	resultIssued     = "issued"     // finish passed: a certificate was issued
	resultRefused    = "refused"    // either call was refused; reason says why
)

// metrics are the service's Prometheus metrics.
type metrics struct {
	registry *prometheus.Registry
	attempts *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// enrollmentCounter is what the enrolment gauges read (enrollment.Store).
type enrollmentCounter interface {
	Counts() (records, ambiguous int)
}

func newMetrics(version string, enrolled enrollmentCounter) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certagent_attestation_attempts_total",
			Help: "Attestation calls answered, by result (challenged: begin passed; issued: finish passed and a certificate was issued; refused) and refusal reason.",
		}, []string{"result", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certagent_attestation_duration_seconds",
			Help:    "Time to answer an attestation call, by step (begin, finish: finish includes issuing the certificate).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30},
		}, []string{"step"}),
	}
	m.attempts.WithLabelValues(resultChallenged, "")
	m.attempts.WithLabelValues(resultIssued, "")
	for _, r := range attestation.Reasons {
		m.attempts.WithLabelValues(resultRefused, string(r))
	}
	gauge := func(name, help string, read func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(read()) })
	}
	m.registry.MustRegister(m.attempts, m.duration,
		gauge("certagent_attestation_enrollments", "TPMEnrollment records in the service's cache.",
			func() int { n, _ := enrolled.Counts(); return n }),
		gauge("certagent_attestation_enrollments_ambiguous", "EK hashes enrolled for more than one node (each such TPM is refused).",
			func() int { _, n := enrolled.Counts(); return n }),
		prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_cluster_build_info", Help: "The service's version.",
			ConstLabels: prometheus.Labels{"version": version}}, nil).WithLabelValues(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) observe(o attestor.Outcome) {
	switch {
	case o.Reason != "":
		m.attempts.WithLabelValues(resultRefused, string(o.Reason)).Inc()
	case o.Step == attestor.StepFinish:
		m.attempts.WithLabelValues(resultIssued, "").Inc()
	default:
		m.attempts.WithLabelValues(resultChallenged, "").Inc()
	}
}

// timed measures each attestation call into the duration histogram.
func (m *metrics) timed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		step := ""
		switch r.URL.Path {
		case attestation.BeginPath:
			step = string(attestor.StepBegin)
		case attestation.FinishPath:
			step = string(attestor.StepFinish)
		}
		start := time.Now()
		next.ServeHTTP(w, r)
		if step != "" {
			m.duration.WithLabelValues(step).Observe(time.Since(start).Seconds())
		}
	})
}

// enrollmentRefs finds the TPMEnrollments naming an EK (enrollment.Store).
type enrollmentRefs interface {
	References(ekHash string) []corev1.ObjectReference
}

// Event reasons on a TPMEnrollment.
const (
	EventAttested = "Attested"
	EventRefused  = "AttestationRefused"
)

// maxEventMessage keeps an Event's message within what the API server
// stores for it.
const maxEventMessage = 1024

// observer counts every outcome and, when the TPM is enrolled, records an
// Event on its TPMEnrollment: the certificate issued, or why it was refused.
// A begun exchange is counted, not recorded. The recorder never blocks (it
// drops when its queue is full) and rate-limits per object.
type observer struct {
	metrics  *metrics
	recorder record.EventRecorder
	refs     enrollmentRefs
}

func (o *observer) Observe(out attestor.Outcome) {
	o.metrics.observe(out)
	if out.EKHash == "" || out.Reason == "" && out.Step != attestor.StepFinish {
		return
	}
	typ, reason, msg := corev1.EventTypeNormal, EventAttested,
		fmt.Sprintf("TPM %s proved it is node %s; a client certificate for system:node:%s was issued", out.EKHash, out.Node, out.Node)
	if out.Reason != "" {
		typ, reason = corev1.EventTypeWarning, EventRefused
		msg = fmt.Sprintf("%s at %s (TPM %s, node %q claimed): %s", out.Reason, out.Step, out.EKHash, out.ClaimedNode, out.Detail)
		if out.Cause != nil {
			msg += "; cause: " + out.Cause.Error()
		}
	}
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage-3] + "..."
	}
	for _, ref := range o.refs.References(out.EKHash) {
		o.recorder.Event(&ref, typ, reason, msg)
	}
}
