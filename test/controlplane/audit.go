package controlplane

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// auditPolicy records, once each, the requests of nodes and bootstrap tokens
// (what certagent sends) and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:nodes", "system:bootstrappers"]
- level: None
`

// AuditEvent is the part of an audit log line the tests read.
type AuditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// RequestsBy returns the requests user made that were received in [from, to):
// one event per request (its ResponseComplete stage, or ResponseStarted for a
// watch that is still open).
func (cp *ControlPlane) RequestsBy(user string, from, to time.Time) ([]AuditEvent, error) {
	f, err := os.Open(cp.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	seen := map[string]AuditEvent{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			AuditEvent
			AuditID string `json:"auditID"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("parse audit log: %w", err)
		}
		t := ev.RequestReceivedTimestamp
		if ev.User.Username != user || t.Before(from) || !t.Before(to) {
			continue
		}
		seen[ev.AuditID] = ev.AuditEvent
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out := make([]AuditEvent, 0, len(seen))
	for _, ev := range seen {
		out = append(out, ev)
	}
	return out, nil
}
