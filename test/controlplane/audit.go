package controlplane

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// AuditedGroup is a group whose users' requests the audit log records: a
// test's own client that is to be counted (the fleet's ad-hoc approver).
const AuditedGroup = "certagent-test:audited"

// auditPolicy records, once each, the requests of nodes and bootstrap tokens
// (what certagent sends), of service accounts (the attestation service, the
// approver) and of AuditedGroup, and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:nodes", "system:bootstrappers", "system:serviceaccounts", "` + AuditedGroup + `"]
- level: None
`

// AuditEvent is the part of an audit log line the tests read.
type AuditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	// UserAgent is the client's User-Agent header: which program sent it.
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	// ObjectRef is nil for non-resource requests (/healthz, /version).
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	// ResponseStatus is nil in a watch's ResponseStarted event.
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// RequestsBy returns the requests user made that were received in [from, to):
// one event per request (its ResponseComplete stage, or ResponseStarted for a
// watch that is still open).
func (cp *ControlPlane) RequestsBy(user string, from, to time.Time) ([]AuditEvent, error) {
	return cp.AuditEvents(from, to, func(ev AuditEvent) bool { return ev.User.Username == user })
}

// AuditEvents returns the requests received in [from, to) that keep says
// to keep (nil keeps all): one event per request, as RequestsBy.
func (cp *ControlPlane) AuditEvents(from, to time.Time, keep func(AuditEvent) bool) ([]AuditEvent, error) {
	f, err := os.Open(cp.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	seen := map[string]int{} // audit ID -> index in out
	var out []AuditEvent
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
		if t.Before(from) || !t.Before(to) || (keep != nil && !keep(ev.AuditEvent)) {
			continue
		}
		if i, ok := seen[ev.AuditID]; ok {
			out[i] = ev.AuditEvent // a later stage of the same request
			continue
		}
		seen[ev.AuditID] = len(out)
		out = append(out, ev.AuditEvent)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}
