package attestation

// certagent itself (the built binary) joining by attestation: no bootstrap
// kubeconfig, no token anywhere on the node.

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/swtpm"
	"sigs.k8s.io/yaml"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// agentBin is the node agent: $CERTAGENT_BIN, or built from the source tree.
func agentBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CERTAGENT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	out := filepath.Join(work, "certagent")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/certagent")
	cmd.Dir = filepath.Join("..", "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building certagent: %v\n%s", err, b)
	}
	return out
}

// agentNode is a node running certagent with attestation configured the way
// user-data writes it: the service's address and CA hash, the API server and
// the cluster CA; nothing secret.
type agentNode struct {
	*node
	dir, config, kubeconf, certDir string
}

func newAgentNode(t *testing.T, name string) *agentNode {
	t.Helper()
	return newAgentNodeMadeBy(t, name, vendor)
}

// newAgentNodeMadeBy is newAgentNode with a TPM of maker.
func newAgentNodeMadeBy(t *testing.T, name string, maker *swtpm.CA) *agentNode {
	t.Helper()
	n := &agentNode{node: newNode(t, name, maker), dir: t.TempDir()}
	n.config = filepath.Join(n.dir, "config.yaml")
	n.kubeconf = filepath.Join(n.dir, "kubelet.conf")
	n.certDir = filepath.Join(n.dir, "pki")
	cfg := fmt.Sprintf(`apiVersion: certagent.io/v1alpha1
kind: AgentConfig
nodeName: %s
kubeconfig: %s
certDir: %s
bootstrapKubeconfig: %s
serving: {enabled: false}
metrics: {address: ""}
attestation:
  serviceURL: %s
  serviceCAHash: %s
  tpm: %s
  server: %s
  certificateAuthority: %s
`, name, n.kubeconf, n.certDir, filepath.Join(n.dir, "bootstrap-kubelet.conf"), svc.URL, serviceCA.Hash, n.tpm.Path(), cp.URL, cp.CAFile)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// certagent runs the agent's command line on this node.
func (n *agentNode) certagent(timeout time.Duration, args ...string) (int, string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	words := 1 // the command, then its flags
	if args[0] == "attest" {
		words = 2
	}
	args = append(args[:words:words], append([]string{"--config", n.config}, args[words:]...)...)
	out, err := exec.CommandContext(ctx, agentBin(n.t), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		n.t.Fatalf("certagent %v: %v\n%s", args, err, out)
	}
	return 0, string(out)
}

// enrolWithTheCommand pipes `certagent attest enroll` into kubectl apply, as
// docs/attestation.md tells an operator to.
func (n *agentNode) enrolWithTheCommand() {
	n.t.Helper()
	code, out := n.certagent(time.Minute, "attest", "enroll")
	if code != 0 {
		n.t.Fatalf("certagent attest enroll: exit %d\n%s", code, out)
	}
	kubectl(n.t, out, "apply", "-f", "-")
	waitEnrollmentsSeen(n.t)
}

// whoAmI asks the API server who kubelet.conf, loaded as the kubelet loads
// it, authenticates as.
func (n *agentNode) whoAmI() authenticationv1.UserInfo {
	n.t.Helper()
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: n.kubeconf}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		n.t.Fatal(err)
	}
	r, err := kubernetes.NewForConfigOrDie(rc).AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatalf("kubelet.conf: %v", err)
	}
	return r.Status.UserInfo
}

// obtainedBy is what `certagent status -o json` says of the client certificate.
func (n *agentNode) obtainedBy() string {
	n.t.Helper()
	code, out := n.certagent(time.Minute, "status", "-o", "json")
	var st struct {
		Certificates []struct {
			Kind       string `json:"kind"`
			ObtainedBy string `json:"obtainedBy"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Certificates) == 0 {
		n.t.Fatalf("certagent status -o json: exit %d, %v\n%s", code, err, out)
	}
	return st.Certificates[0].ObtainedBy
}

// TestNodeJoinsByAttestation: a node whose user-data carries no secret (the
// service's address and CA hash, the API server, the cluster CA), enrolled
// with `certagent attest enroll | kubectl apply -f -`, joins with `certagent
// run --once`: kubelet.conf authenticates as system:node:<its name>, from
// one CSR that the attestation service requested and approved, and
// `certagent status` says how the certificate was obtained.
func TestNodeJoinsByAttestation(t *testing.T) {
	n := newAgentNode(t, "agent-joins")
	n.enrolWithTheCommand()
	if code, out := n.certagent(2*time.Minute, "run", "--once"); code != 0 {
		t.Fatalf("run --once: exit %d\n%s", code, out)
	}
	if u := n.whoAmI(); u.Username != "system:node:"+n.name || !slices.Contains(u.Groups, "system:nodes") {
		t.Fatalf("kubelet.conf authenticates as %q %v", u.Username, u.Groups)
	}
	csrs := csrsFor(t, n.name)
	if len(csrs) != 1 || csrs[0].Spec.Username != saUser || csrs[0].Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
		t.Fatalf("CSRs for the node: %d, want one client CSR requested by %s", len(csrs), saUser)
	}
	if got := n.obtainedBy(); got != "TPM attestation" {
		t.Fatalf("status says the client certificate was obtained by %q", got)
	}
}

// TestRefusedNodesWriteNothing: certagent on a node the service refuses
// (a TPM nobody enrolled, a TPM enrolled for another name, a TPM whose maker
// the service does not trust) fails with an error naming the reason, and
// writes no certificate and no kubelet.conf; no CSR is made.
func TestRefusedNodesWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		make         func(t *testing.T) *agentNode
	}{
		{"unenrolled", "unknown_ek", func(t *testing.T) *agentNode { return newAgentNode(t, "agent-unenrolled") }},
		{"another node's name", "name_mismatch", func(t *testing.T) *agentNode {
			n := newAgentNode(t, "agent-claims-another")
			n.enrol("agent-enrolled-elsewhere")
			return n
		}},
		{"an untrusted maker", "untrusted_ek_ca", func(t *testing.T) *agentNode {
			n := newAgentNodeMadeBy(t, "agent-rogue-maker", swtpm.NewTestCA(t, "rogue"))
			n.enrolWithTheCommand()
			return n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.make(t)
			code, out := n.certagent(2*time.Minute, "run", "--once", "--timeout", "30s")
			if code == 0 || !strings.Contains(out, tc.reason) {
				t.Fatalf("run --once: exit %d, want a failure naming %s:\n%s", code, tc.reason, out)
			}
			for _, p := range []string{n.kubeconf, filepath.Join(n.certDir, "kubelet-client-current.pem")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s written after a refusal", p)
				}
			}
			if c := csrsFor(t, n.name); len(c) != 0 {
				t.Fatalf("%d CSRs for a refused node", len(c))
			}
		})
	}
}

// TestServiceDownWhileTheNodeJoins: the attestation service is down when
// the node starts; the node backs off and joins once the service is back,
// with one CSR.
func TestServiceDownWhileTheNodeJoins(t *testing.T) {
	n := newAgentNode(t, "agent-service-down")
	n.enrolWithTheCommand()
	if code := svc.stop(); code != 0 {
		t.Fatalf("stopping the service: exit %d", code)
	}
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(8 * time.Second)
		svc.restart(t)
	}()
	code, out := n.certagent(3*time.Minute, "run", "--once", "--timeout", "2m")
	<-restarted
	if code != 0 {
		t.Fatalf("run --once: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "connection refused") {
		t.Errorf("the node never met the service down:\n%s", out)
	}
	if c := csrsFor(t, n.name); len(c) != 1 {
		t.Fatalf("%d CSRs, want 1", len(c))
	}
}

// TestExpiredNodeReattests: a node whose client certificate expired while it
// was off, with no bootstrap kubeconfig, proves itself again and recovers
// with no person (the signer issues 90-second certificates for the test).
func TestExpiredNodeReattests(t *testing.T) {
	n := newAgentNode(t, "agent-expired")
	n.enrolWithTheCommand()
	restartSigner(t, 90*time.Second)
	code, out := n.certagent(2*time.Minute, "run", "--once")
	restartSigner(t, 0)
	if code != 0 {
		t.Fatalf("first join: exit %d\n%s", code, out)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", n.kubeconf)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile(rc.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := firstCert(t, cert)
	if life := time.Until(leaf.NotAfter); life > 2*time.Minute {
		t.Fatalf("the first certificate is valid for %s more, want a short one", life)
	}
	time.Sleep(time.Until(leaf.NotAfter) + 3*time.Second) // the node is off past its certificate's expiry
	if code, out := n.certagent(2*time.Minute, "run", "--once"); code != 0 || !strings.Contains(out, "not now") {
		t.Fatalf("after expiry: exit %d, want 0 after finding the certificate expired\n%s", code, out)
	}
	if u := n.whoAmI(); u.Username != "system:node:"+n.name {
		t.Fatalf("kubelet.conf authenticates as %q", u.Username)
	}
	if c := csrsFor(t, n.name); len(c) != 2 {
		t.Fatalf("%d CSRs, want 2 (the first join and the re-attestation)", len(c))
	}
}

// restartSigner restarts the controller-manager to sign with lifetime d
// (0: the default again).
func restartSigner(t *testing.T, d time.Duration) {
	t.Helper()
	if err := cp.StopControllerManager(); err != nil {
		t.Fatal(err)
	}
	cp.SetSigningDuration(d)
	if err := cp.StartControllerManager(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// firstCert is the first certificate of a PEM bundle.
func firstCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCloudInitAttestationExample: the files packaging/cloud-init/user-data-attestation.yaml
// writes, with its REPLACE_ values filled in, are all a node needs to join
// with its TPM: certagent reads them and joins (the example is run here
// through certagent with its paths under a scratch root, not booted on a
// systemd node).
func TestCloudInitAttestationExample(t *testing.T) {
	data, err := os.ReadFile("../../packaging/cloud-init/user-data-attestation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	filled := string(data)
	for old, v := range map[string]string{
		"REPLACE_CA_DATA":             base64.StdEncoding.EncodeToString(cp.CACertPEM),
		"REPLACE_API_SERVER_URL":      cp.URL,
		"REPLACE_ATTESTATION_URL":     svc.URL,
		"REPLACE_ATTESTATION_CA_HASH": serviceCA.Hash,
	} {
		if !strings.Contains(filled, old) {
			t.Fatalf("the example lacks %s", old)
		}
		filled = strings.ReplaceAll(filled, old, v)
	}
	if strings.Contains(strings.ToLower(filled), "token") && strings.Contains(filled, "user:") {
		t.Fatal("the example carries a credential")
	}
	var ud struct {
		WriteFiles []struct {
			Path, Content, Encoding, Permissions string
		} `json:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(filled), &ud); err != nil {
		t.Fatal(err)
	}
	n := newAgentNode(t, "agent-cloud-init")
	root := t.TempDir()
	for _, f := range ud.WriteFiles {
		content := []byte(strings.ReplaceAll(f.Content, "/etc/kubernetes/", root+"/etc/kubernetes/"))
		if f.Encoding == "b64" {
			if content, err = base64.StdEncoding.DecodeString(f.Content); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	main := fmt.Sprintf("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nnodeName: %s\nkubeconfig: %s\ncertDir: %s\nbootstrapKubeconfig: %s\nserving: {enabled: false}\nmetrics: {address: \"\"}\nattestation: {tpm: %q}\n",
		n.name, n.kubeconf, n.certDir, filepath.Join(root, "etc/kubernetes/bootstrap-kubelet.conf"), n.tpm.Path())
	n.config = filepath.Join(root, "etc/certagent/config.yaml")
	if err := os.WriteFile(n.config, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	n.enrolWithTheCommand()
	if code, out := n.certagent(2*time.Minute, "run", "--once"); code != 0 {
		t.Fatalf("run --once: exit %d\n%s", code, out)
	}
	if u := n.whoAmI(); u.Username != "system:node:"+n.name {
		t.Fatalf("kubelet.conf authenticates as %q", u.Username)
	}
}
