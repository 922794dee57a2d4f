// Package servingnames is what the node and the serving CSR approver share
// about a kubelet serving certificate's names: which IP addresses and DNS
// names a Node object reports, and, in plain words, which names a request
// asks for that the Node does not report. The approver (cluster/approver)
// refuses those; certagent (bootstrap) warns of them before it waits.
//
// It holds no policy of its own beyond the Node's addresses: the approver's
// operator may allow more DNS names (--dns-suffix), which the node cannot see.
package servingnames

import (
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// NodeIPs are the InternalIP and ExternalIP addresses, in canonical form
// (unparsable ones left out, duplicates once).
func NodeIPs(addrs []corev1.NodeAddress) []string {
	var out []string
	for _, a := range addrs {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip := net.ParseIP(a.Address); ip != nil && !slices.Contains(out, ip.String()) {
			out = append(out, ip.String())
		}
	}
	return out
}

// NodeDNSNames are the node's name and its Hostname, InternalDNS and
// ExternalDNS addresses.
func NodeDNSNames(node string, addrs []corev1.NodeAddress) []string {
	out := []string{node}
	for _, a := range addrs {
		switch a.Type {
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			if !slices.Contains(out, a.Address) {
				out = append(out, a.Address)
			}
		}
	}
	return out
}

// Unreported says, for each IP and DNS name asked for that the Node node
// (with addrs) does not report, why in plain words: "192.0.2.9 is not an
// address of Node n1". DNS names compare without regard to case.
func Unreported(node string, addrs []corev1.NodeAddress, dns []string, ips []net.IP) []string {
	var out []string
	own := NodeIPs(addrs)
	for _, ip := range ips {
		if !slices.Contains(own, ip.String()) {
			out = append(out, fmt.Sprintf("%s is not an address of Node %s", ip, node))
		}
	}
	names := NodeDNSNames(node, addrs)
	for _, d := range dns {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, d) }) {
			out = append(out, fmt.Sprintf("DNS name %s is not Node %s's name nor one of its DNS addresses", d, node))
		}
	}
	return out
}
