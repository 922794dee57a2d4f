package bootstrap

import (
	"net"
	"slices"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// ServingSANs returns the serving certificate's subject alternative names:
// the node name as the only DNS name (what approvers such as
// kubelet-csr-approver accept by default), the node's primary IP chosen as
// Kubernetes chooses it, and the configured extras, without duplicates.
// primaryIP may be nil when the host has no usable interface.
func ServingSANs(nodeName string, primaryIP net.IP, extraDNS []string, extraIPs []net.IP) ([]string, []net.IP) {
	dns := []string{nodeName}
	for _, d := range extraDNS {
		if !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}
	var ips []net.IP
	add := func(ip net.IP) {
		if ip != nil && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	add(primaryIP)
	for _, ip := range extraIPs {
		add(ip)
	}
	return dns, ips
}

// PrimaryIP is the host's primary address as the kubelet picks it
// (k8s.io/apimachinery/pkg/util/net.ChooseHostInterface), nil if none.
func PrimaryIP() net.IP {
	ip, err := utilnet.ChooseHostInterface()
	if err != nil {
		return nil
	}
	return ip
}
