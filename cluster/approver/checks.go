package approver

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/protocol/servingnames"
)

// Each check returns nil when it passes, else the refusal naming it.

const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

// checkRequester: the CSR was made by a node, with a node's credentials:
// user system:node:<name> in group system:nodes. It returns the name.
func checkRequester(user string, groups []string) (string, *Decision) {
	name, ok := strings.CutPrefix(user, nodeUserPrefix)
	if !ok || name == "" || !slices.Contains(groups, nodesGroup) {
		d := refuse(RuleRequester, "the requester %q (groups %v) is not a node: a node's CSR is made as system:node:<name> in group system:nodes", user, groups)
		return "", &d
	}
	return name, nil
}

// parseRequest: spec.request is one PEM CERTIFICATE REQUEST, signed by its key.
func parseRequest(data []byte) (*x509.CertificateRequest, *Decision) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		d := refuse(RuleRequest, "spec.request is not a PEM CERTIFICATE REQUEST")
		return nil, &d
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = req.CheckSignature()
	}
	if err != nil {
		d := refuse(RuleRequest, "spec.request does not parse: %v", err)
		return nil, &d
	}
	return req, nil
}

// checkSubject: the certificate is for the requester and nothing more:
// CN exactly the requester's user name, O exactly system:nodes.
func checkSubject(req *x509.CertificateRequest, user string) *Decision {
	s := req.Subject
	if s.CommonName != user {
		d := refuse(RuleSubject, "the subject's CN %q is not the requester %s", s.CommonName, user)
		return &d
	}
	if len(s.Organization) != 1 || s.Organization[0] != nodesGroup {
		d := refuse(RuleSubject, "the subject's O %v is not exactly [%s]", s.Organization, nodesGroup)
		return &d
	}
	return nil
}

// checkUsages: digital signature and server auth, key encipherment allowed
// (RSA keys), nothing else.
func checkUsages(usages []certificatesv1.KeyUsage) *Decision {
	required := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	allowed := append(slices.Clone(required), certificatesv1.UsageKeyEncipherment)
	for _, u := range required {
		if !slices.Contains(usages, u) {
			d := refuse(RuleUsages, "the usages %v lack %q: a serving certificate needs digital signature and server auth", usages, u)
			return &d
		}
	}
	for _, u := range usages {
		if !slices.Contains(allowed, u) {
			d := refuse(RuleUsages, "the usage %q is not a serving one (digital signature, server auth, key encipherment)", u)
			return &d
		}
	}
	return nil
}

// checkExpiration: the lifetime asked for is within max (if max is set).
func checkExpiration(seconds *int32, max time.Duration) *Decision {
	if max == 0 || seconds == nil {
		return nil
	}
	if asked := time.Duration(*seconds) * time.Second; asked > max {
		d := refuse(RuleExpiration, "expirationSeconds %d (%v) is longer than the allowed %v", *seconds, asked, max)
		return &d
	}
	return nil
}

// checkSANKinds: at least one DNS name or IP address, and no e-mail address
// or URI (nothing a serving certificate of a node needs).
func checkSANKinds(req *x509.CertificateRequest) *Decision {
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		d := refuse(RuleEmailOrURI, "the request asks for e-mail addresses %v or URIs %v: a node serves by DNS name and IP only", req.EmailAddresses, req.URIs)
		return &d
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		d := refuse(RuleNoNames, "the request asks for no DNS name and no IP address")
		return &d
	}
	return nil
}

// checkIP: ip is an InternalIP or ExternalIP of node, and of no other Node.
func checkIP(ip net.IP, node *corev1.Node, nodes Nodes) *Decision {
	addr := ip.String()
	others := slices.DeleteFunc(slices.Clone(nodes.WithAddress(addr)), func(n string) bool { return n == node.Name })
	slices.Sort(others)
	own := slices.Contains(IPAddresses(node), addr)
	var d Decision
	switch {
	case own && len(others) == 0:
		return nil
	case own:
		d = refuse(RuleIPOfAnotherNode, "%s is also an address of Node %s", addr, strings.Join(others, ", "))
	case len(others) > 0:
		d = refuse(RuleIPOfAnotherNode, "%s is an address of Node %s, not of Node %s (it reports %s)", addr, strings.Join(others, ", "), node.Name, list(IPAddresses(node)))
	default:
		d = refuse(RuleIPNotNodeAddress, "%s is not an address of Node %s (it reports %s)", addr, node.Name, list(IPAddresses(node)))
	}
	return &d
}

// checkDNS: name is the node's name, a Hostname, InternalDNS or ExternalDNS
// address of its Node, or "<node name>.<suffix>" for an allowed suffix.
func checkDNS(name string, node *corev1.Node, suffixes []string) *Decision {
	allowed := servingnames.NodeDNSNames(node.Name, node.Status.Addresses)
	for _, s := range suffixes {
		allowed = append(allowed, node.Name+"."+s)
	}
	if !slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, name) }) {
		d := refuse(RuleDNSNotAllowed, "DNS name %s is not Node %s's: allowed are %s", name, node.Name, list(allowed))
		return &d
	}
	return nil
}

// IPAddresses are the node's InternalIP and ExternalIP addresses, in
// canonical form (unparsable ones left out).
func IPAddresses(node *corev1.Node) []string { return servingnames.NodeIPs(node.Status.Addresses) }

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
