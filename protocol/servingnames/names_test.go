package servingnames

import (
	"net"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestUnreported(t *testing.T) {
	addrs := []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "10.0.0.1"},
		{Type: corev1.NodeExternalIP, Address: "2001:db8::1"},
		{Type: corev1.NodeHostName, Address: "n1.local"},
		{Type: corev1.NodeInternalDNS, Address: "n1.internal"},
		{Type: "Other", Address: "10.9.9.9"},
	}
	for _, tc := range []struct {
		name string
		dns  []string
		ips  []string
		want []string
	}{
		{"everything reported", []string{"n1", "N1.LOCAL", "n1.internal"}, []string{"10.0.0.1", "2001:db8:0::1"}, nil},
		{"an address not reported", []string{"n1"}, []string{"10.0.0.1", "192.0.2.9"}, []string{"192.0.2.9 is not an address of Node n1"}},
		{"an address of another type", nil, []string{"10.9.9.9"}, []string{"10.9.9.9 is not an address of Node n1"}},
		{"a DNS name not reported", []string{"n1.example.com"}, nil, []string{"DNS name n1.example.com is not Node n1's name nor one of its DNS addresses"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ips []net.IP
			for _, s := range tc.ips {
				ips = append(ips, net.ParseIP(s))
			}
			if got := Unreported("n1", addrs, tc.dns, ips); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
