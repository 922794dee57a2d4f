package fleet

import (
	"testing"
	"time"
)

// TestMarkdownApprovers: the approver comparison's table gives each
// approver's time to approval, to every serving certificate, its approvals
// by reason, requests by kind, CPU and peak RSS, side by side.
func TestMarkdownApprovers(t *testing.T) {
	ms := millisDist
	r := &Report{N: 2, Approvers: []*ApproverRun{
		{Approver: "ad-hoc", N: 2, ToApproval: ms(10, 30), AllStored: 1500 * time.Millisecond,
			Requests:  map[string]int{"update certificatesigningrequests/approval": 2, "list certificatesigningrequests": 1},
			Approvals: 2, Reasons: map[string]int{"FleetApprove": 2}, CPU: 0.25, PeakRSSKiB: 2048},
		{Approver: "certagent", N: 2, ToApproval: ms(20, 40), AllStored: 2 * time.Second,
			Requests:  map[string]int{"create events": 2, "update certificatesigningrequests/approval": 2},
			Approvals: 2, Reasons: map[string]int{"NodeOwnsEveryName": 2}, CPU: 0.5, PeakRSSKiB: 3072},
	}}
	markdownHas(t, r.Markdown(),
		"## Serving CSR approvers, the same fleet of 2 nodes",
		"| | ad-hoc | certagent |",
		"| serving CSR created → approved (one watch), p50 / p99 / max | 10 / 30 / 30 ms | 20 / 40 / 40 ms |",
		"| every serving certificate on disk, from the fleet's start | 1.5 s | 2.0 s |",
		"| approved (by reason) | 2 (FleetApprove 2) | 2 (NodeOwnsEveryName 2) |",
		"| API requests by the approver's identity (audit log) | 3 (list certificatesigningrequests 1, update certificatesigningrequests/approval 2) | 4 (create events 2, update certificatesigningrequests/approval 2) |",
		"| approver CPU, its whole life (start-up, the fleet, 2 s after) | 0.25 s | 0.50 s |",
		"| approver peak RSS (VmHWM) | 2.0 MiB | 3.0 MiB |",
	)
}

// millisDist is the distribution of v milliseconds.
func millisDist(v ...int) Dist {
	var ts []time.Duration
	for _, x := range v {
		ts = append(ts, time.Duration(x)*time.Millisecond)
	}
	return NewDist(ts)
}
