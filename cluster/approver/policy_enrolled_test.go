package approver

import (
	"strings"
	"testing"

	"github.com/certagent/certagent/cluster/enrollment"
)

// enrolledMap is Enrollments over a map, for tests.
type enrolledMap map[string]enrollment.Names

func (m enrolledMap) Names(node string) (enrollment.Names, bool) { n, ok := m[node]; return n, ok }

// TestDecideEnrolled: a node joined by attestation gets only the names its
// TPMEnrollment lists (and its Node reports); a list the record leaves out,
// or no record, is today's Node-only decision.
func TestDecideEnrolled(t *testing.T) {
	nodes := nodeMap{"n1": node("n1", "InternalIP=10.0.0.1", "ExternalIP=192.0.2.1", "InternalDNS=n1.internal", "InternalIP=fd00::1")}
	listed := enrollment.Names{Addresses: []string{"10.0.0.1", "fd00::1"}, AddressesListed: true, DNSNames: []string{"N1.internal"}, DNSNamesListed: true}
	policy := Policy{DNSSuffixes: []string{"nodes.example.com"}}
	for _, tc := range []struct {
		name     string
		enrolled enrolledMap
		change   func(*csrSpec)
		verdict  Verdict
		rule     string
		message  string
	}{
		{"listed address and name", enrolledMap{"n1": listed}, func(s *csrSpec) {
			s.ips, s.dns = []string{"10.0.0.1", "fd00::1"}, []string{"n1", "n1.internal"}
		}, Approve, RuleApproved, ""},
		{"an address the Node reports, not the enrolment", enrolledMap{"n1": listed}, func(s *csrSpec) { s.ips = []string{"10.0.0.1", "192.0.2.1"} },
			Refuse, RuleNotEnrolledAddress, "192.0.2.1 is not an address TPMEnrollment n1 lists (it lists 10.0.0.1, fd00::1)"},
		{"an address neither has: the Node's rule first", enrolledMap{"n1": listed}, func(s *csrSpec) { s.ips = []string{"192.0.2.9"} },
			Refuse, RuleIPNotNodeAddress, "not an address of Node n1"},
		{"a suffix name the policy allows, not the enrolment", enrolledMap{"n1": listed}, func(s *csrSpec) { s.dns = []string{"n1.nodes.example.com"} },
			Refuse, RuleNotEnrolledDNSName, "DNS name n1.nodes.example.com is not one TPMEnrollment n1 lists"},
		{"addresses listed as none: no IP", enrolledMap{"n1": {AddressesListed: true}}, nil,
			Refuse, RuleNotEnrolledAddress, "(it lists none)"},
		{"DNS names listed as none: the node's name still", enrolledMap{"n1": {DNSNamesListed: true}}, nil, Approve, RuleApproved, ""},
		{"a record listing nothing: the Node alone", enrolledMap{"n1": {}}, func(s *csrSpec) { s.ips = []string{"192.0.2.1"}; s.dns = []string{"n1.internal"} },
			Approve, RuleApproved, ""},
		{"another node's record does not apply", enrolledMap{"n2": listed}, func(s *csrSpec) { s.ips = []string{"192.0.2.1"} }, Approve, RuleApproved, ""},
		{"no TPMEnrollments served", nil, func(s *csrSpec) { s.ips = []string{"192.0.2.1"} }, Approve, RuleApproved, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var enrolled Enrollments
			if tc.enrolled != nil {
				enrolled = tc.enrolled
			}
			d := policy.Decide(servingCSR(t, tc.change), nodes, enrolled)
			if d.Verdict != tc.verdict || d.Rule != tc.rule || !strings.Contains(d.Message, tc.message) {
				t.Errorf("got %v %s %q, want %v %s containing %q", d.Verdict, d.Rule, d.Message, tc.verdict, tc.rule, tc.message)
			}
		})
	}
}
