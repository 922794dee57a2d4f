// Package approver approves kubelet serving CSRs (signer
// kubernetes.io/kubelet-serving) that ask only for what the node owns: its
// own name, the addresses its Node object reports, and DNS names the
// operator allows. policy.go and checks.go are the decision, a pure function
// of the CSR and the Node objects; controller.go watches CSRs and Nodes and
// writes the decision (an approval, a denial if configured, an Event).
//
// It must not approve for any other signer, nor sign anything: the signer
// (kube-controller-manager's csrsigning) signs what is approved.
package approver

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

// SignerName is the one signer the approver decides for.
const SignerName = certificatesv1.KubeletServingSignerName

// Verdict is what to do with a CSR.
type Verdict int

const (
	// Approve: every check passed.
	Approve Verdict = iota
	// Refuse: a check failed; the controller leaves it pending or denies it.
	Refuse
	// Wait: it cannot be decided yet (its Node does not exist); left pending.
	Wait
	// Ignore: not a kubelet serving CSR; not the approver's to decide.
	Ignore
)

func (v Verdict) String() string {
	return [...]string{"approve", "refuse", "wait", "ignore"}[v]
}

// Rules: a Decision's Rule, CamelCase as a condition's or an Event's reason.
const (
	RuleApproved         = "NodeOwnsEveryName"
	RuleSigner           = "NotKubeletServing"
	RuleRequester        = "RequesterNotANode"
	RuleRequest          = "UnparsableRequest"
	RuleSubject          = "SubjectNotRequester"
	RuleUsages           = "UsagesNotServing"
	RuleExpiration       = "ExpirationTooLong"
	RuleNoNames          = "NoSubjectAltNames"
	RuleEmailOrURI       = "EmailOrURISAN"
	RuleNodeNotFound     = "NodeNotFound"
	RuleIPNotNodeAddress = "IPNotNodeAddress"
	RuleIPOfAnotherNode  = "IPOfAnotherNode"
	RuleDNSNotAllowed    = "DNSNameNotAllowed"
	// The node joined by attestation: its TPMEnrollment lists its names.
	RuleNotEnrolledAddress = "NotEnrolledAddress"
	RuleNotEnrolledDNSName = "NotEnrolledDNSName"
)

// Decision is the verdict on one CSR, the rule that decided it, and a
// message in plain words: "192.0.2.9 is not an address of Node n1".
type Decision struct {
	Verdict Verdict
	Rule    string
	Message string
}

func refuse(rule, format string, args ...any) Decision {
	return Decision{Verdict: Refuse, Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// Nodes is what the policy reads of the Node objects (an informer's cache in
// the controller, a map in tests).
type Nodes interface {
	// Node returns the Node name, or nil if there is none.
	Node(name string) *corev1.Node
	// WithAddress returns the names of the Nodes that report ip (an
	// InternalIP or ExternalIP address, in canonical form).
	WithAddress(ip string) []string
}

// Policy is the operator's configuration of the decision.
type Policy struct {
	// DNSSuffixes allow, besides the node's name and the DNS names its Node
	// reports, "<node name>.<suffix>" for each suffix ("nodes.example.com").
	// Only the node's own name under a suffix: never another node's.
	DNSSuffixes []string
	// MaxExpiration caps the expirationSeconds a CSR may ask for; zero for
	// no cap. A CSR asking none gets the signer's duration
	// (--cluster-signing-duration), which the approver cannot see.
	MaxExpiration time.Duration
}

// Check validates the policy.
func (p Policy) Check() error {
	for _, s := range p.DNSSuffixes {
		if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.ContainsAny(s, " *") {
			return fmt.Errorf("DNS suffix %q: give a domain such as nodes.example.com, without a leading dot or a wildcard", s)
		}
	}
	if p.MaxExpiration < 0 {
		return errors.New("the maximum duration is negative")
	}
	return nil
}

// Decide runs the checks in order and returns the first that fails, or
// Approve. Checks of the CSR alone come first, so a malformed CSR is refused
// whether or not its Node exists; then the Node must exist (else Wait); then
// each name is checked against the Nodes and, where the node's TPMEnrollment
// lists names (enrolled may be nil: none), against the enrolment too.
func (p Policy) Decide(csr *certificatesv1.CertificateSigningRequest, nodes Nodes, enrolled Enrollments) Decision {
	if csr.Spec.SignerName != SignerName {
		return Decision{Verdict: Ignore, Rule: RuleSigner, Message: fmt.Sprintf("signer %s is not %s", csr.Spec.SignerName, SignerName)}
	}
	node, d := checkRequester(csr.Spec.Username, csr.Spec.Groups)
	if d != nil {
		return *d
	}
	req, d := parseRequest(csr.Spec.Request)
	if d != nil {
		return *d
	}
	for _, check := range []func() *Decision{
		func() *Decision { return checkSubject(req, csr.Spec.Username) },
		func() *Decision { return checkUsages(csr.Spec.Usages) },
		func() *Decision { return checkExpiration(csr.Spec.ExpirationSeconds, p.MaxExpiration) },
		func() *Decision { return checkSANKinds(req) },
	} {
		if d := check(); d != nil {
			return *d
		}
	}
	n := nodes.Node(node)
	if n == nil {
		return Decision{Verdict: Wait, Rule: RuleNodeNotFound,
			Message: fmt.Sprintf("Node %s does not exist yet; deciding when it does", node)}
	}
	e := enrolledNames(enrolled, node)
	for _, ip := range req.IPAddresses {
		if d := cmp.Or(checkIP(ip, n, nodes), checkEnrolledIP(ip, node, e)); d != nil {
			return *d
		}
	}
	for _, name := range req.DNSNames {
		if d := cmp.Or(checkDNS(name, n, p.DNSSuffixes), checkEnrolledDNS(name, node, e)); d != nil {
			return *d
		}
	}
	return Decision{Verdict: Approve, Rule: RuleApproved, Message: fmt.Sprintf(
		"every name is Node %s's: DNS %s, IP %s", node, list(req.DNSNames), list(ipStrings(req.IPAddresses)))}
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
