package approver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nodeMap is Nodes over a map, for tests.
type nodeMap map[string]*corev1.Node

func (m nodeMap) Node(name string) *corev1.Node { return m[name] }

func (m nodeMap) WithAddress(ip string) []string {
	var out []string
	for name, n := range m {
		if slices.Contains(IPAddresses(n), ip) {
			out = append(out, name)
		}
	}
	return out
}

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		typ, addr, _ := strings.Cut(a, "=")
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: addr})
	}
	return n
}

// csrSpec is what a test CSR asks for.
type csrSpec struct {
	user, cn string
	org      []string
	groups   []string
	dns      []string
	ips      []string
	email    []string
	uri      string
	usages   []certificatesv1.KeyUsage
	signer   string
	seconds  int32
}

// servingCSR is a CSR n1 makes as certagent does, changed by change.
func servingCSR(t testing.TB, change func(*csrSpec)) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	s := csrSpec{
		user: "system:node:n1", cn: "system:node:n1", org: []string{"system:nodes"},
		groups: []string{"system:nodes", "system:authenticated"},
		dns:    []string{"n1"}, ips: []string{"10.0.0.1"},
		usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		signer: SignerName,
	}
	if change != nil {
		change(&s)
	}
	return makeCSR(t, s)
}

// makeCSR makes the CSR object for s with a fresh P-256 key.
func makeCSR(t testing.TB, s csrSpec) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: s.cn, Organization: s.org}, DNSNames: s.dns, EmailAddresses: s.email}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if s.uri != "" {
		u, _ := url.Parse(s.uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-test", UID: "uid-1"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: s.signer, Usages: s.usages, Username: s.user, Groups: s.groups,
		},
	}
	if s.seconds != 0 {
		csr.Spec.ExpirationSeconds = &s.seconds
	}
	return csr
}

func TestDecide(t *testing.T) {
	nodes := nodeMap{
		"n1": node("n1", "InternalIP=10.0.0.1", "ExternalIP=192.0.2.1", "Hostname=n1.local", "InternalDNS=n1.internal", "InternalIP=fd00::1"),
		"n2": node("n2", "InternalIP=10.0.0.2", "ExternalIP=10.0.0.5"),
		"n3": node("n3", "InternalIP=10.0.0.5"),
	}
	policy := Policy{DNSSuffixes: []string{"nodes.example.com"}, MaxExpiration: 24 * time.Hour}
	for _, tc := range []struct {
		name    string
		change  func(*csrSpec)
		verdict Verdict
		rule    string
		message string // a part of the message
	}{
		{"as certagent asks", nil, Approve, RuleApproved, "every name is Node n1's"},
		{"every address and DNS name n1 reports", func(s *csrSpec) {
			s.ips = []string{"10.0.0.1", "192.0.2.1", "fd00::1"}
			s.dns = []string{"n1", "n1.local", "N1.Internal", "n1.nodes.example.com"}
		}, Approve, RuleApproved, ""},
		{"key encipherment (RSA) allowed", func(s *csrSpec) { s.usages = append(s.usages, certificatesv1.UsageKeyEncipherment) }, Approve, RuleApproved, ""},
		{"expiration within the cap", func(s *csrSpec) { s.seconds = 3600 }, Approve, RuleApproved, ""},
		{"another signer", func(s *csrSpec) { s.signer = certificatesv1.KubeAPIServerClientKubeletSignerName }, Ignore, RuleSigner, "is not kubernetes.io/kubelet-serving"},
		{"requester not a node", func(s *csrSpec) { s.user = "alice" }, Refuse, RuleRequester, `"alice"`},
		{"requester not in system:nodes", func(s *csrSpec) { s.groups = []string{"system:authenticated"} }, Refuse, RuleRequester, "not a node"},
		{"CN not the requester", func(s *csrSpec) { s.cn = "system:node:n2" }, Refuse, RuleSubject, `CN "system:node:n2" is not the requester system:node:n1`},
		{"a second node's name", func(s *csrSpec) { s.user, s.cn = "system:node:n1", "system:node:n1"; s.dns = []string{"n2"} }, Refuse, RuleDNSNotAllowed, "DNS name n2 is not Node n1's"},
		{"O not system:nodes", func(s *csrSpec) { s.org = []string{"system:masters"} }, Refuse, RuleSubject, "O [system:masters]"},
		{"O with an extra group", func(s *csrSpec) { s.org = []string{"system:nodes", "system:masters"} }, Refuse, RuleSubject, "not exactly"},
		{"client auth", func(s *csrSpec) { s.usages = append(s.usages, certificatesv1.UsageClientAuth) }, Refuse, RuleUsages, `"client auth" is not a serving one`},
		{"no server auth", func(s *csrSpec) { s.usages = s.usages[:1] }, Refuse, RuleUsages, `lack "server auth"`},
		{"expiration over the cap", func(s *csrSpec) { s.seconds = 48 * 3600 }, Refuse, RuleExpiration, "longer than the allowed 24h0m0s"},
		{"an e-mail SAN", func(s *csrSpec) { s.email = []string{"n1@example.com"} }, Refuse, RuleEmailOrURI, "n1@example.com"},
		{"a URI SAN", func(s *csrSpec) { s.uri = "spiffe://cluster/n1" }, Refuse, RuleEmailOrURI, "spiffe://cluster/n1"},
		{"no SANs", func(s *csrSpec) { s.dns, s.ips = nil, nil }, Refuse, RuleNoNames, "no DNS name"},
		{"an IP the Node does not report", func(s *csrSpec) { s.ips = []string{"10.0.0.1", "192.0.2.9"} }, Refuse, RuleIPNotNodeAddress, "192.0.2.9 is not an address of Node n1"},
		{"an IP of another Node", func(s *csrSpec) { s.ips = []string{"10.0.0.2"} }, Refuse, RuleIPOfAnotherNode, "10.0.0.2 is an address of Node n2, not of Node n1"},
		{"a DNS name outside policy", func(s *csrSpec) { s.dns = []string{"n1", "evil.example.com"} }, Refuse, RuleDNSNotAllowed, "DNS name evil.example.com is not Node n1's"},
		{"another node's name under the suffix", func(s *csrSpec) { s.dns = []string{"n2.nodes.example.com"} }, Refuse, RuleDNSNotAllowed, "n2.nodes.example.com"},
		{"the Node does not exist yet", func(s *csrSpec) { s.user, s.cn, s.dns = "system:node:n9", "system:node:n9", []string{"n9"} }, Wait, RuleNodeNotFound, "Node n9 does not exist yet"},
		{"a malformed CSR is refused before the Node is looked for", func(s *csrSpec) { s.user, s.cn = "system:node:n9", "system:node:n8" }, Refuse, RuleSubject, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := policy.Decide(servingCSR(t, tc.change), nodes, nil)
			if d.Verdict != tc.verdict || d.Rule != tc.rule || !strings.Contains(d.Message, tc.message) {
				t.Errorf("got %v %s %q, want %v %s containing %q", d.Verdict, d.Rule, d.Message, tc.verdict, tc.rule, tc.message)
			}
		})
	}
}

// TestDecideSharedAddress: an address two Nodes report is neither's.
func TestDecideSharedAddress(t *testing.T) {
	nodes := nodeMap{
		"n2": node("n2", "InternalIP=10.0.0.2", "ExternalIP=10.0.0.5"),
		"n3": node("n3", "InternalIP=10.0.0.5"),
	}
	for _, n := range []string{"n2", "n3"} {
		csr := servingCSR(t, func(s *csrSpec) {
			s.user, s.cn, s.dns, s.ips = "system:node:"+n, "system:node:"+n, []string{n}, []string{"10.0.0.5"}
		})
		d := Policy{}.Decide(csr, nodes, nil)
		if d.Verdict != Refuse || d.Rule != RuleIPOfAnotherNode || !strings.Contains(d.Message, "10.0.0.5 is also an address of Node n") {
			t.Errorf("%s: got %v %s %q", n, d.Verdict, d.Rule, d.Message)
		}
	}
}

// TestDecideUnparsable: a request that is not a signed CSR.
func TestDecideUnparsable(t *testing.T) {
	csr := servingCSR(t, nil)
	for name, req := range map[string][]byte{
		"not PEM":        []byte("hello"),
		"another block":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"not a CSR body": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	} {
		csr.Spec.Request = req
		if d := (Policy{}).Decide(csr, nodeMap{"n1": node("n1", "InternalIP=10.0.0.1")}, nil); d.Verdict != Refuse || d.Rule != RuleRequest {
			t.Errorf("%s: got %v %s %q", name, d.Verdict, d.Rule, d.Message)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	for _, tc := range []struct {
		p  Policy
		ok bool
	}{
		{Policy{}, true},
		{Policy{DNSSuffixes: []string{"nodes.example.com"}, MaxExpiration: time.Hour}, true},
		{Policy{DNSSuffixes: []string{".example.com"}}, false},
		{Policy{DNSSuffixes: []string{"*.example.com"}}, false},
		{Policy{DNSSuffixes: []string{""}}, false},
		{Policy{MaxExpiration: -time.Second}, false},
	} {
		if err := tc.p.Check(); (err == nil) != tc.ok {
			t.Errorf("%+v: error %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}
