package fleet

import (
	"fmt"
	"strings"
	"time"
)

// ApproverRun is one approver's serving half of one fleet
// (TestServingApprovers).
type ApproverRun struct {
	Approver string
	N        int
	// ToApproval: each serving CSR's creation to its approval, as one
	// watch saw them.
	ToApproval Dist
	// AllStored: the fleet's start to the last node's serving certificate
	// on disk.
	AllStored time.Duration
	// Requests by the approver's identity from its start to its stop, by
	// verb and resource.
	Requests   map[string]int
	Approvals  int
	Reasons    map[string]int
	CPU        float64 // seconds
	PeakRSSKiB int64
}

// approverTable writes the approvers side by side.
func (r *Report) approverTable(b *strings.Builder) {
	fmt.Fprintf(b, "## Serving CSR approvers, the same fleet of %d nodes (each in a network namespace, its Node made first)\n\n", r.Approvers[0].N)
	row := table(b, r.Approvers, func(a *ApproverRun) string { return a.Approver })
	row("serving CSR created → approved (one watch), p50 / p99 / max", func(a *ApproverRun) string { return a.ToApproval.Millis() })
	row("every serving certificate on disk, from the fleet's start", func(a *ApproverRun) string { return secs(a.AllStored) })
	row("approved (by reason)", func(a *ApproverRun) string { return fmt.Sprintf("%d%s", a.Approvals, kinds(a.Reasons)) })
	row("API requests by the approver's identity (audit log)", func(a *ApproverRun) string {
		n := 0
		for _, v := range a.Requests {
			n += v
		}
		return fmt.Sprintf("%d%s", n, kinds(a.Requests))
	})
	row("approver CPU, its whole life (start-up, the fleet, 2 s after)", func(a *ApproverRun) string { return fmt.Sprintf("%.2f s", a.CPU) })
	row("approver peak RSS (VmHWM)", func(a *ApproverRun) string { return fmt.Sprintf("%.1f MiB", float64(a.PeakRSSKiB)/1024) })
	b.WriteString("\nThe ad-hoc approver is the test binary (re-executed) approving every serving CSR as an admin; certagent's runs as its service account with the shipped RBAC, logs at info.\n\n")
}
