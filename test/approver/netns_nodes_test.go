package approver

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/syncbuf"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestTwoNodesInNetworkNamespaces: two real certagent daemons, each in a
// network namespace of its own (a veth pair on a bridge the suite creates),
// reach the API server at the bridge's address and derive their primary IP
// from their own namespace's default route: 10.231.0.2 and 10.231.0.3, the
// addresses their Nodes report. Node B is configured to ask for A's address
// as well (serving.ipAddresses): the approver approves A's serving CSR and
// leaves B's pending, naming IPOfAnotherNode in its Event, and certagent B
// warns of it in its log and a ServingNamesNotOnNode Event on its Node. Once
// Node B reports A's address too, B's CSR still stays pending: only the
// check that no other Node reports it refuses it then.
func TestTwoNodesInNetworkNamespaces(t *testing.T) {
	if bridge == nil {
		t.Skip("needs root: the suite creates the bridge and network namespaces only as root")
	}
	const a, b, ipA, ipB = "ap-netns-a", "ap-netns-b", "10.231.0.2", "10.231.0.3"
	netnsNode(t, "cant-a", ipA+"/24")
	netnsNode(t, "cant-b", ipB+"/24")
	makeNode(t, a, "InternalIP="+ipA)
	makeNode(t, b, "InternalIP="+ipB)
	dirA, outA := startInNetns(t, "cant-a", a, "")
	_, outB := startInNetns(t, "cant-b", b, "serving:\n  ipAddresses: ["+ipA+"]\n")

	current := filepath.Join(dirA, "pki", "kubelet-server-current.pem")
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(current)
		return err == nil, nil
	}); err != nil {
		t.Fatalf("node A has no serving certificate after 90 s:\n%s", outA)
	}
	servingCSRApproved(t, a)
	if ips := csrIPs(t, nodeServingCSR(t, a, outA)); !slices.Equal(ips, []string{ipA}) {
		t.Errorf("node A's serving CSR asks for IPs %v, want its namespace's primary address [%s]", ips, ipA)
	}

	csrB := nodeServingCSR(t, b, outB)
	if ips := csrIPs(t, csrB); !slices.Equal(ips, []string{ipB, ipA}) {
		t.Errorf("node B's serving CSR asks for IPs %v, want [%s %s] (its primary address, then A's)", ips, ipB, ipA)
	}
	e := waitEventWith(t, csrB.Name, "IPOfAnotherNode", ipA+" is an address of Node "+a+", not of Node "+b)
	if e.Type != "Warning" || !strings.HasPrefix(e.Message, "not approved, left pending: ") {
		t.Errorf("Event %s %s %q, want a Warning: not approved, left pending", e.Type, e.Reason, e.Message)
	}
	assertPending(t, csrB.Name)

	want := ipA + " is not an address of Node " + b
	if note := waitNodeEvent(t, b, "ServingNamesNotOnNode", outB); !strings.Contains(note, "an approver checking the Node will refuse it: "+want) {
		t.Errorf("certagent B's Event note %q, want it to name %q", note, want)
	}
	if log := outB.String(); !strings.Contains(log, "the serving CSR asks for names the Node does not report") || !strings.Contains(log, want) {
		t.Errorf("certagent B's log does not warn of %q:\n%s", want, log)
	}
	t.Logf("node A (%s): serving CSR approved; node B (%s): CSR %s pending: %s", ipA, ipB, csrB.Name, e.Message)
	alsoReported(t, b, csrB.Name, a, ipB, ipA)
}

// alsoReported: Node b made to report A's address ipA as well (a node's
// kubelet may write its own Node's addresses), its CSR asking for it is
// still refused, Node a named.
func alsoReported(t *testing.T, b, csr, a, ipB, ipA string) {
	t.Helper()
	n, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), b, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setAddresses(t, n, "InternalIP="+ipB, "InternalIP="+ipA)
	e := waitEventWith(t, csr, "IPOfAnotherNode", ipA+" is also an address of Node "+a)
	assertPending(t, csr)
	t.Logf("Node %s reporting %s too: CSR %s still pending: %s", b, ipA, csr, e.Message)
}

// startInNetns starts the certagent daemon for node name (certagent's
// config plus the YAML extra) in the network namespace ns, stopped when the
// test ends, and returns its directory and its output.
func startInNetns(t *testing.T, ns, name, extra string) (string, *syncbuf.Buffer) {
	t.Helper()
	cmd := certagent(t, name)
	cfg := cmd.Args[len(cmd.Args)-1]
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(extra)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	in := inNetns(cmd, ns)
	out := &syncbuf.Buffer{}
	in.Stdout, in.Stderr = out, out
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = in.Process.Kill()
		_ = in.Wait()
		if t.Failed() {
			t.Logf("certagent %s in %s:\n%s", name, ns, tail(out.String(), 30))
		}
	})
	return filepath.Dir(cfg), out
}

// nodeServingCSR waits a minute for node name's serving CSR and returns it;
// else the test fails with log, certagent's output.
func nodeServingCSR(t *testing.T, name string, log *syncbuf.Buffer) certificatesv1.CertificateSigningRequest {
	t.Helper()
	var found certificatesv1.CertificateSigningRequest
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil // the next poll
		}
		for _, csr := range list.Items {
			if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && csr.Spec.Username == "system:node:"+name {
				found = csr
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no serving CSR of node %s: %v\n%s", name, err, log)
	}
	return found
}

// csrIPs are the IP SANs the CSR asks for, in its order.
func csrIPs(t *testing.T, csr certificatesv1.CertificateSigningRequest) []string {
	t.Helper()
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		t.Fatalf("CSR %s: no PEM request", csr.Name)
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatalf("CSR %s: %v", csr.Name, err)
	}
	var ips []string
	for _, ip := range req.IPAddresses {
		ips = append(ips, ip.String())
	}
	return ips
}
