package approver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/syncbuf"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/test/controlplane"
)

// The approver's condition reasons and Event reasons (cluster/approver).
const approvedReason = "NodeOwnsEveryName"

// TestApproverApprovesWhatTheNodeOwns: a CSR a node makes with its own
// credentials for its name, a name under the --dns-suffix, its Node's
// Hostname and both its addresses is approved by the approver (reason
// NodeOwnsEveryName, an Approved Event), and the signer issues it. It
// reports the time from the CSR's create to the approval.
func TestApproverApprovesWhatTheNodeOwns(t *testing.T) {
	makeNode(t, "ap-own", "InternalIP=10.88.1.1", "ExternalIP=10.88.1.2", "Hostname=ap-own.local")
	node := asNode(t, "ap-own")
	var latencies []time.Duration
	for range 5 {
		name, created := postCSR(t, node, request{cn: "system:node:ap-own",
			dns: []string{"ap-own", "ap-own.local", "ap-own." + dnsSuffix}, ips: []string{"10.88.1.1", "10.88.1.2"}})
		c, seen := waitCondition(t, name, 30*time.Second)
		if c.Type != certificatesv1.CertificateApproved || c.Reason != approvedReason || !strings.Contains(c.Message, "approved by certagent-cluster approve: every name is Node ap-own's") {
			t.Fatalf("CSR %s: condition %+v", name, c)
		}
		latencies = append(latencies, seen.Sub(created))
		waitEvent(t, name, "Approved")
		waitIssued(t, name)
	}
	slices.Sort(latencies)
	t.Logf("CSR create to approval (5 CSRs): median %v, max %v, all %v", latencies[2], latencies[4], latencies)
}

// waitIssued waits for the signer's certificate in the CSR's status.
func waitIssued(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		csr, err := cp.Admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		return err == nil && len(csr.Status.Certificate) > 0, nil
	})
	if err != nil {
		t.Fatalf("CSR %s approved but not signed: %v", name, err)
	}
}

// TestApproverRefusesNamingTheRule: each CSR asking for something its node
// does not own stays pending (the default), with one Warning Event on it
// whose reason is the rule and whose message says what failed; deciding
// them all again (a Node's addresses change) adds no Event.
func TestApproverRefusesNamingTheRule(t *testing.T) {
	makeNode(t, "ap-r1", "InternalIP=10.88.2.1")
	makeNode(t, "ap-r2", "InternalIP=10.88.2.2")
	r1 := asNode(t, "ap-r1")
	self := "system:node:ap-r1"
	var refused []string
	for _, tc := range []struct {
		name, rule, message string
		as                  kubernetes.Interface
		req                 request
	}{
		{"an IP of another Node", "IPOfAnotherNode", "10.88.2.2 is an address of Node ap-r2, not of Node ap-r1",
			r1, request{cn: self, dns: []string{"ap-r1"}, ips: []string{"10.88.2.2"}}},
		{"an IP the Node does not report", "IPNotNodeAddress", "192.0.2.9 is not an address of Node ap-r1",
			r1, request{cn: self, dns: []string{"ap-r1"}, ips: []string{"10.88.2.1", "192.0.2.9"}}},
		{"a DNS name outside policy", "DNSNameNotAllowed", "DNS name evil.example.com is not Node ap-r1's",
			r1, request{cn: self, dns: []string{"ap-r1", "evil.example.com"}, ips: []string{"10.88.2.1"}}},
		{"a second node's name as a DNS name", "DNSNameNotAllowed", "DNS name ap-r2 is not Node ap-r1's",
			r1, request{cn: self, dns: []string{"ap-r1", "ap-r2"}}},
		{"a second node's name under the suffix", "DNSNameNotAllowed", "DNS name ap-r2." + dnsSuffix + " is not Node ap-r1's",
			r1, request{cn: self, dns: []string{"ap-r2." + dnsSuffix}}},
		{"an organization other than system:nodes", "SubjectNotRequester", "the subject's O [system:masters] is not exactly [system:nodes]",
			r1, request{cn: self, org: []string{"system:masters"}, dns: []string{"ap-r1"}}},
		{"a bootstrap token asking for a node's certificate", "RequesterNotANode", "is not a node",
			asBootstrapToken(t), request{cn: self, dns: []string{"ap-r1"}, ips: []string{"10.88.2.1"}}},
	} {
		name, _ := postCSR(t, tc.as, tc.req)
		refused = append(refused, name)
		t.Run(tc.name, func(t *testing.T) {
			e := waitEvent(t, name, tc.rule)
			if e.Type != "Warning" || !strings.HasPrefix(e.Message, "not approved, left pending: ") || !strings.Contains(e.Message, tc.message) {
				t.Errorf("Event %s %s %q, want the message to contain %q", e.Type, e.Reason, e.Message, tc.message)
			}
			assertPending(t, name)
		})
	}
	// A canary approved by a change of ap-r2's addresses: once it is, the
	// approver has decided every pending CSR again.
	canary, _ := postCSR(t, asNode(t, "ap-r2"), request{cn: "system:node:ap-r2", ips: []string{"10.88.2.20"}})
	waitEvent(t, canary, "IPNotNodeAddress")
	n2, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), "ap-r2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setAddresses(t, n2, "InternalIP=10.88.2.2", "InternalIP=10.88.2.20")
	if c, _ := waitCondition(t, canary, 30*time.Second); c.Type != certificatesv1.CertificateApproved {
		t.Fatalf("canary: %+v", c)
	}
	time.Sleep(time.Second) // a bounded look for Events that must not come
	for _, name := range refused {
		if events := csrEvents(t, name); len(events) != 1 || events[0].Count != 1 {
			t.Errorf("CSR %s: Events %s, want exactly one", name, describe(events))
		}
		assertPending(t, name)
	}
}

// TestNodeCannotAskForAnotherName: a node's CSR whose CN is not its own
// name (another node's, or none) never reaches the approver on this
// Kubernetes: the NodeRestriction admission plugin forbids it at create. The
// approver's own check of the subject (TestDecide) is for clusters without it.
func TestNodeCannotAskForAnotherName(t *testing.T) {
	r1 := asNode(t, "ap-cn")
	for _, cn := range []string{"system:node:ap-r2", "kube-apiserver"} {
		_, err := r1.CertificatesV1().CertificateSigningRequests().Create(context.Background(), servingCSR(t, request{cn: cn, dns: []string{"ap-cn"}}), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "can only create a node CSR with CN=system:node:ap-cn") {
			t.Errorf("CN %s: %v, want forbidden by NodeRestriction", cn, err)
		}
	}
}

// TestApproverApprovesOnceTheNodeReportsTheAddress: a node moved to a new
// address asks for it before its Node reports it: the CSR waits (an Event
// says why) and is approved as soon as the Node reports the address.
func TestApproverApprovesOnceTheNodeReportsTheAddress(t *testing.T) {
	makeNode(t, "ap-move", "InternalIP=10.88.3.1")
	name, _ := postCSR(t, asNode(t, "ap-move"), request{cn: "system:node:ap-move", dns: []string{"ap-move"}, ips: []string{"10.88.3.2"}})
	waitEvent(t, name, "IPNotNodeAddress")
	assertPending(t, name)
	n, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), "ap-move", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	setAddresses(t, n, "InternalIP=10.88.3.2")
	c, seen := waitCondition(t, name, 30*time.Second)
	if c.Type != certificatesv1.CertificateApproved || c.Reason != approvedReason {
		t.Fatalf("condition %+v", c)
	}
	t.Logf("Node address update to approval: %v", seen.Sub(updated))
}

// TestApproverWaitsForTheNode: a CSR made before its Node exists waits
// (Event NodeNotFound) and is approved once the Node is created.
func TestApproverWaitsForTheNode(t *testing.T) {
	name, _ := postCSR(t, asNode(t, "ap-late"), request{cn: "system:node:ap-late", dns: []string{"ap-late"}, ips: []string{"10.88.4.1"}})
	if e := waitEvent(t, name, "NodeNotFound"); !strings.Contains(e.Message, "waiting: Node ap-late does not exist yet") {
		t.Errorf("Event %q", e.Message)
	}
	makeNode(t, "ap-late", "InternalIP=10.88.4.1")
	if c, _ := waitCondition(t, name, 30*time.Second); c.Type != certificatesv1.CertificateApproved {
		t.Fatalf("condition %+v", c)
	}
}

// TestApproverDenies: with --deny (and --max-duration), a refused CSR is
// denied, the rule as the condition's reason and the failure in its
// message; a CSR waiting for its Node is not denied.
func TestApproverDenies(t *testing.T) {
	shared.Stop()
	deny, err := startApprover(context.Background(), "deny", "--deny", "--max-duration", "1h")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deny.Stop()
		if shared, err = startApprover(context.Background(), "shared", "--dns-suffix", dnsSuffix); err != nil {
			t.Fatal(err)
		}
	})
	makeNode(t, "ap-d1", "InternalIP=10.88.5.1")
	d1 := asNode(t, "ap-d1")
	for _, tc := range []struct {
		rule, message string
		req           request
	}{
		{"IPNotNodeAddress", "denied by certagent-cluster approve: 10.88.5.9 is not an address of Node ap-d1", request{cn: "system:node:ap-d1", ips: []string{"10.88.5.9"}}},
		{"ExpirationTooLong", "expirationSeconds 7200 (2h0m0s) is longer than the allowed 1h0m0s", request{cn: "system:node:ap-d1", ips: []string{"10.88.5.1"}, seconds: 7200}},
		{"DNSNameNotAllowed", "DNS name ap-d1." + dnsSuffix + " is not Node ap-d1's", request{cn: "system:node:ap-d1", dns: []string{"ap-d1." + dnsSuffix}}},
	} {
		name, _ := postCSR(t, d1, tc.req)
		c, _ := waitCondition(t, name, 30*time.Second)
		if c.Type != certificatesv1.CertificateDenied || c.Reason != tc.rule || !strings.Contains(c.Message, tc.message) {
			t.Errorf("%s: condition %+v, want Denied %s %q", tc.rule, c, tc.rule, tc.message)
		}
		if e := waitEvent(t, name, tc.rule); !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: Event %q", tc.rule, e.Message)
		}
	}
	early, _ := postCSR(t, asNode(t, "ap-d2"), request{cn: "system:node:ap-d2", ips: []string{"10.88.5.2"}})
	waitEvent(t, early, "NodeNotFound")
	assertPending(t, early)
}

// TestCertagentServingApprovedByTheApprover: the real certagent bootstraps a
// node whose Node reports the host's primary address: its serving CSR is
// approved by the approver alone (kube-controller-manager approves no
// serving CSR) and certagent --once ends with the certificate on disk.
func TestCertagentServingApprovedByTheApprover(t *testing.T) {
	ip := primaryIP(t)
	const name = "ap-certagent"
	makeNode(t, name, "InternalIP="+ip, "Hostname="+name)
	cmd := certagent(t, name, "--once", "--timeout", "90s")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("certagent run --once: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cmd.Args[len(cmd.Args)-1]), "pki", "kubelet-server-current.pem")); err != nil { // beside the config file
		t.Error(err)
	}
	servingCSRApproved(t, name)
}

// TestCertagentWarnsOfAnAddressTheNodeDoesNotReport: the real certagent
// daemon whose Node does not report the host's primary address warns, in its
// log and in a Warning Event ServingNamesNotOnNode on the Node, that an
// approver checking the Node will refuse that address; once the Node reports
// it, the approver approves and certagent stores the certificate.
func TestCertagentWarnsOfAnAddressTheNodeDoesNotReport(t *testing.T) {
	ip := primaryIP(t)
	const name = "ap-certagent-moved"
	makeNode(t, name, "InternalIP=10.88.7.1")
	cmd := certagent(t, name) // the daemon: --once writes no Events
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	want := ip + " is not an address of Node " + name
	if note := waitNodeEvent(t, name, "ServingNamesNotOnNode", out); !strings.Contains(note, "an approver checking the Node will refuse it: "+want) {
		t.Errorf("Event note %q, want it to name %q", note, want)
	}
	n, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setAddresses(t, n, "InternalIP="+ip)
	current := filepath.Join(filepath.Dir(cmd.Args[len(cmd.Args)-1]), "pki", "kubelet-server-current.pem")
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(current)
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no serving certificate a minute after the Node reported %s:\n%s", ip, out.String())
	}
	if !strings.Contains(out.String(), "the serving CSR asks for names the Node does not report") || !strings.Contains(out.String(), want) {
		t.Errorf("certagent's log does not warn of %q:\n%s", want, out.String())
	}
	servingCSRApproved(t, name)
}

// primaryIP is the address certagent puts in its serving CSR (the kubelet's
// choice of the host's primary address).
func primaryIP(t *testing.T) string {
	t.Helper()
	ip, err := utilnet.ChooseHostInterface()
	if err != nil {
		t.Skipf("no primary address for certagent's serving SANs: %v", err)
	}
	return ip.String()
}

// certagent is certagent run for node name with a fresh auto-approved
// bootstrap token, in a directory of its own (the last argument is the
// config file there), metrics off, and extra flags.
func certagent(t *testing.T, name string, extra ...string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	tok, err := cp.CreateBootstrapToken(context.Background(), controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	bootstrap, cfg := filepath.Join(dir, "bootstrap-kubelet.conf"), filepath.Join(dir, "config.yaml")
	if err := cp.WriteBootstrapKubeconfig(bootstrap, tok, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nmetrics:\n  address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--node-name", name, "--bootstrap-kubeconfig", bootstrap,
		"--kubeconfig", filepath.Join(dir, "kubelet.conf"), "--cert-dir", filepath.Join(dir, "pki")}, extra...)
	return exec.Command(certagentBin, append(args, "--config", cfg)...)
}

// servingCSRApproved: node name has exactly one serving CSR, approved by the
// approver.
func servingCSRApproved(t *testing.T, name string) {
	t.Helper()
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	serving := 0
	for _, csr := range list.Items {
		if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName || csr.Spec.Username != "system:node:"+name {
			continue
		}
		serving++
		if len(csr.Status.Conditions) == 0 || csr.Status.Conditions[0].Reason != approvedReason {
			t.Errorf("certagent's serving CSR %s: conditions %+v, want approved by the approver", csr.Name, csr.Status.Conditions)
		}
	}
	if serving != 1 {
		t.Errorf("%d serving CSRs of %s, want 1", serving, name)
	}
}
