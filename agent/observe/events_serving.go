package observe

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/bootstrap"
)

// ServingCSRPending tells that the serving CSR name waits for approval, if
// it still does (still) servingPendingAfter from now: an approver that
// answers at once leaves no Event to read.
func (r *Events) ServingCSRPending(name string, still func() bool) {
	r.record(nodeEvent{typ: corev1.EventTypeNormal, reason: ReasonServingCSRPending, action: "RequestCertificate", kind: bootstrap.Serving,
		note:  fmt.Sprintf("serving CSR %s waits for approval: kubectl certificate approve %s", name, name),
		after: ServingPendingAfter, still: still})
}

// ServingNamesUnreported tells that the serving CSR name asks for names the
// Node does not report (unreported, in plain words): an approver that checks
// the Node will not approve it until the Node reports them.
func (r *Events) ServingNamesUnreported(name string, unreported []string) {
	r.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonServingNames, action: "RequestCertificate", kind: bootstrap.Serving,
		note: fmt.Sprintf("serving CSR %s: an approver checking the Node will refuse it: %s", name, strings.Join(unreported, "; "))})
}
