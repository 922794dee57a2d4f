package inittls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certagent/certagent/protocol/attestation"
)

func secret(t *testing.T, c *fake.Clientset, name string) *corev1.Secret {
	t.Helper()
	s, err := c.CoreV1().Secrets("certagent-system").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// leafAndCA parses tls.crt: the serving certificate, then the CA.
func leafAndCA(t *testing.T, s *corev1.Secret) (*x509.Certificate, *x509.Certificate) {
	t.Helper()
	var certs []*x509.Certificate
	for rest := s.Data["tls.crt"]; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("tls.crt holds %d certificates, want the leaf and the CA", len(certs))
	}
	return certs[0], certs[1]
}

func TestRun(t *testing.T) {
	c := fake.NewClientset()
	now := time.Now()
	r, err := Run(context.Background(), Options{Client: c, Namespace: "certagent-system", SANs: []string{"10.0.0.5", "attest.example.com"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tlsSecret := secret(t, c, TLSSecret)
	if tlsSecret.Type != corev1.SecretTypeTLS {
		t.Errorf("type %s", tlsSecret.Type)
	}
	leaf, ca := leafAndCA(t, tlsSecret)
	if !r.CACreated || r.CAHash != attestation.ServiceCAHash(ca) || string(r.CAPEM) != string(tlsSecret.Data["ca.crt"]) {
		t.Errorf("result %+v does not describe the CA in the Secret", r)
	}
	if _, err := tls.X509KeyPair(tlsSecret.Data["tls.crt"], tlsSecret.Data["tls.key"]); err != nil {
		t.Errorf("tls.crt and tls.key do not pair: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"10.0.0.5", "attest.example.com"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("a node dialing %s would refuse the certificate: %v", name, err)
		}
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) || leaf.IsCA ||
		!leaf.NotAfter.Equal(r.NotAfter) || r.NotAfter.Sub(now) > 365*24*time.Hour || r.NotAfter.Sub(now) < 365*24*time.Hour-time.Second {
		t.Errorf("leaf %v %v CA=%t until %v", leaf.IPAddresses, leaf.DNSNames, leaf.IsCA, leaf.NotAfter)
	}
	caSecret := secret(t, c, CASecret)
	if len(caSecret.Data["ca.key"]) == 0 {
		t.Error("the CA key is not kept")
	}
	if _, ok := tlsSecret.Data["ca.key"]; ok {
		t.Error("the mounted Secret holds the CA key")
	}

	// Again, with another address: the same CA, a new serving certificate.
	again, err := Run(context.Background(), Options{Client: c, Namespace: "certagent-system", SANs: []string{"attest2.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := leafAndCA(t, secret(t, c, TLSSecret))
	if again.CACreated || again.CAHash != r.CAHash || leaf2.DNSNames[0] != "attest2.example.com" {
		t.Errorf("a second run: CA created %t, hash %s (was %s), names %v", again.CACreated, again.CAHash, r.CAHash, leaf2.DNSNames)
	}
	// --new-ca replaces it.
	renewed, err := Run(context.Background(), Options{Client: c, Namespace: "certagent-system", SANs: []string{"attest2.example.com"}, NewCA: true})
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.CACreated || renewed.CAHash == r.CAHash {
		t.Error("--new-ca kept the CA")
	}
}

func TestRunRefuses(t *testing.T) {
	for name, o := range map[string]Options{
		"no SAN":           {Namespace: "ns"},
		"a bad SAN":        {Namespace: "ns", SANs: []string{"not a name"}},
		"no namespace":     {SANs: []string{"10.0.0.5"}},
		"a short validity": {Namespace: "ns", SANs: []string{"10.0.0.5"}, Validity: time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			o.Client = fake.NewClientset()
			if _, err := Run(context.Background(), o); err == nil {
				t.Error("accepted")
			}
		})
	}
	t.Run("a broken CA Secret", func(t *testing.T) {
		c := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecret, Namespace: "ns"}, Data: map[string][]byte{"ca.crt": []byte("x")}})
		_, err := Run(context.Background(), Options{Client: c, Namespace: "ns", SANs: []string{"10.0.0.5"}})
		if err == nil || !strings.Contains(err.Error(), "--new-ca") {
			t.Errorf("got %v, want a pointer to --new-ca", err)
		}
	})
}
