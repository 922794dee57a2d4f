package approver

import (
	"net"
	"slices"
	"strings"

	"github.com/certagent/certagent/cluster/enrollment"
)

// Enrollments is what the policy reads of the TPMEnrollments: the names a
// node joined by attestation was enrolled with (enrollment.Store over its
// informer in the controller, a map in tests).
type Enrollments interface {
	// Names returns what node's record lists, and whether it has one.
	Names(node string) (enrollment.Names, bool)
}

// checkEnrolledIP: where the node's enrolment lists addresses, ip is one
// of them. The Node reporting it (checkIP) is not enough then: a node can
// add an address to its own Node, not to its enrolment.
func checkEnrolledIP(ip net.IP, node string, e enrollment.Names) *Decision {
	if !e.AddressesListed || slices.Contains(e.Addresses, ip.String()) {
		return nil
	}
	d := refuse(RuleNotEnrolledAddress, "%s is not an address TPMEnrollment %s lists (it lists %s)", ip, node, list(e.Addresses))
	return &d
}

// checkEnrolledDNS: where the node's enrolment lists DNS names, name is
// the node's own name (the record's name) or one of them.
func checkEnrolledDNS(name, node string, e enrollment.Names) *Decision {
	if !e.DNSNamesListed || strings.EqualFold(name, node) ||
		slices.ContainsFunc(e.DNSNames, func(a string) bool { return strings.EqualFold(a, name) }) {
		return nil
	}
	d := refuse(RuleNotEnrolledDNSName, "DNS name %s is not one TPMEnrollment %s lists (it lists %s, besides %s)", name, node, list(e.DNSNames), node)
	return &d
}

// enrolledNames is the node's record's names, none if enrolled is nil (the
// cluster serves no TPMEnrollments) or the node has no record.
func enrolledNames(enrolled Enrollments, node string) enrollment.Names {
	if enrolled == nil {
		return enrollment.Names{}
	}
	n, _ := enrolled.Names(node)
	return n
}
