package controlplane

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"slices"
	"testing"
)

// TestServingCertificateNamesTheBindAddress: the API server's serving
// certificate names 127.0.0.1 and, for Options.BindAddress, that address
// too, so that clients reaching it there (network namespaces on a bridge)
// verify it.
func TestServingCertificateNamesTheBindAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		bind net.IP
		want []string
	}{
		{"loopback (the default)", net.IPv4(127, 0, 0, 1), []string{"127.0.0.1"}},
		{"a bridge address", net.ParseIP("10.231.0.1"), []string{"127.0.0.1", "10.231.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := generatePKI(t.TempDir(), tc.bind)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(p.ServingCert)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range cert.IPAddresses {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("IP SANs %v, want %v", got, tc.want)
			}
		})
	}
}
