package attestation

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/protocol/attestation"
)

// TestAttestationServiceRestart: the service restarts (SIGTERM, a clean
// exit) between a node's begin and finish: the finish is told
// unknown_session, which is retryable, and the node's next attempt succeeds
// with one CSR. And it crashes while a CSR it made and approved waits for
// the signer: the node's next attempt, with the same CSR, adopts that CSR.
func TestAttestationServiceRestart(t *testing.T) {
	t.Run("between begin and finish", func(t *testing.T) {
		n := newNode(t, "tpm-restart", vendor)
		n.enrol(n.name)
		dev, err := tpm.OpenDevice(n.tpm.Path())
		if err != nil {
			t.Fatal(err)
		}
		fin := finishFor(t, dev, begin(t, svc, beginRequest(t, dev, n.name, n.csrPEM)), n.csrPEM)
		_ = dev.Close()

		if code := svc.stop(); code != 0 {
			t.Fatalf("SIGTERM: exit code %d, want 0", code)
		}
		if !strings.Contains(svc.logText(), `"msg":"stopped"`) {
			t.Error("no \"stopped\" line after SIGTERM")
		}
		svc.restart(t)
		_, refusal, _ := post(t, svc, attestation.FinishPath, fin)
		if refusal == nil || refusal.Reason != attestation.ReasonUnknownSession || !refusal.Reason.Retryable() {
			t.Fatalf("the finish after a restart: %+v, want a retryable %s", refusal, attestation.ReasonUnknownSession)
		}
		n.mustAttest(svc, 0)
		if c := csrsFor(t, n.name); len(c) != 1 {
			t.Errorf("%d CSRs, want 1", len(c))
		}
	})
	t.Run("while the CSR waits for the signer", func(t *testing.T) {
		n := newNode(t, "tpm-crash", vendor)
		n.enrol(n.name)
		if err := cp.StopControllerManager(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cp.StartControllerManager(context.Background()) })
		done := make(chan error, 1)
		go func() { _, err := n.attest(svc, 0); done <- err }()
		waitCSR(t, n.name, func(c certificatesv1.CertificateSigningRequest) bool { return approvedCondition(c) != nil })
		svc.crash()
		if err := <-done; err == nil {
			t.Fatal("the node got a certificate from a service that crashed before it was signed")
		}
		if err := cp.StartControllerManager(context.Background()); err != nil {
			t.Fatal(err)
		}
		svc.restart(t)
		n.mustAttest(svc, 0) // the same CSR: the retry finds the one the crashed service made
		if c := csrsFor(t, n.name); len(c) != 1 || len(c[0].Status.Conditions) != 1 {
			t.Errorf("%d CSRs (conditions %+v), want the one, approved once", len(c), c)
		}
	})
}

// TestAttestationShutdownDrains: SIGTERM while a node's finish waits for
// the signer: the service stops taking calls but answers the one in flight
// (here, after its issue timeout, a retryable issue_failed, rather than a
// cut connection), then exits 0.
func TestAttestationShutdownDrains(t *testing.T) {
	kubeconfig, err := serviceAccountKubeconfig(context.Background(), serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	s, err := startService(context.Background(), "drain", kubeconfig, freeAddr(), freeAddr(), "--issue-timeout", "4s")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	n := newNode(t, "tpm-drain", vendor)
	n.enrol(n.name)
	if err := cp.StopControllerManager(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cp.StartControllerManager(context.Background()); err != nil {
			t.Fatal(err)
		}
	}()
	done := make(chan error, 1)
	go func() { _, err := n.attest(s, 0); done <- err }()
	waitCSR(t, n.name, func(c certificatesv1.CertificateSigningRequest) bool { return approvedCondition(c) != nil })
	start := time.Now()
	if code := s.stop(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	err = <-done
	if r, ok := tpm.Refusal(err); !ok || r.Reason != attestation.ReasonIssueFailed || !r.Reason.Retryable() {
		t.Errorf("the finish in flight got %v, want the service's answer, a retryable %s", err, attestation.ReasonIssueFailed)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("stopping took %v", took)
	}
	waitEvent(t, n.name, "Warning AttestationRefused", "issue_failed") // recorded during the drain
}

// waitCSR waits until the service has made a CSR for node that ok accepts.
func waitCSR(t *testing.T, node string, ok func(certificatesv1.CertificateSigningRequest) bool) certificatesv1.CertificateSigningRequest {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, c := range csrsFor(t, node) {
			if ok(c) {
				return c
			}
		}
	}
	t.Fatalf("no such CSR for %s: %+v", node, csrsFor(t, node))
	return certificatesv1.CertificateSigningRequest{}
}

// shippedClusterRole is the ClusterRole of packaging/cluster/20-rbac.yaml.
func shippedClusterRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(manifests, "20-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var r rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &r); err == nil && r.Kind == "ClusterRole" {
			return &r
		}
	}
	t.Fatal("20-rbac.yaml has no ClusterRole")
	return nil
}

// withoutApprove drops the rule granting approve on the signer.
func withoutApprove(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	return slices.DeleteFunc(slices.Clone(rules), func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Verbs, "approve") })
}

// serviceAccountWith makes a service account bound to a ClusterRole of
// rules (and, as shipped, to the events Role) and returns its kubeconfig.
func serviceAccountWith(t *testing.T, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	ctx, admin := context.Background(), cp.Admin
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}}
	steps := []func() error{
		func() error {
			_, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: subject}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := admin.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "certagent-cluster-events"}, Subjects: subject}, metav1.CreateOptions{})
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig, err := serviceAccountKubeconfig(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

const approveRule = "approve on certificates.k8s.io signers kubernetes.io/kube-apiserver-client-kubelet"

// TestAttestationRBAC: the service without a permission it needs says which.
// At start it refuses to run; losing the approve verb while it runs fails
// the issue (retryably, the cause in its log and an Event), leaves the CSR
// pending (kube-controller-manager's csrapproving does not approve what the
// service's account requested), and once the verb is back the node's retry
// gets its certificate through that same CSR.
func TestAttestationRBAC(t *testing.T) {
	shipped := shippedClusterRole(t)
	t.Run("at start", func(t *testing.T) {
		kubeconfig := serviceAccountWith(t, "certagent-cluster-noapprove", withoutApprove(shipped.Rules))
		_, err := startService(context.Background(), "noapprove", kubeconfig, freeAddr(), freeAddr())
		if err == nil || !strings.Contains(err.Error(), "missing RBAC") || !strings.Contains(err.Error(), approveRule) {
			t.Fatalf("a service without approve started, or did not say why: %v", err)
		}
	})
	t.Run("while running", func(t *testing.T) {
		name := "certagent-cluster-losing"
		s, err := startService(context.Background(), "losing", serviceAccountWith(t, name, shipped.Rules), freeAddr(), freeAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer s.stop()
		setRules(t, name, withoutApprove(shipped.Rules))
		n := newNode(t, "tpm-rbac", vendor)
		n.enrol(n.name)
		_, err = n.attest(s, 0)
		if r, ok := tpm.Refusal(err); !ok || r.Reason != attestation.ReasonIssueFailed || !r.Reason.Retryable() {
			t.Fatalf("got %v, want a retryable %s", err, attestation.ReasonIssueFailed)
		}
		line := refusalLogged(t, s, attestation.ReasonIssueFailed, n.name)
		if cause, _ := line["error"].(string); !strings.Contains(cause, "missing RBAC") || !strings.Contains(cause, approveRule) {
			t.Errorf("the log line's cause %q does not name the missing permission", cause)
		}
		waitEvent(t, n.name, "Warning AttestationRefused", "issue_failed", approveRule)
		time.Sleep(2 * time.Second) // csrapproving has seen the CSR by now
		if c := csrsFor(t, n.name); len(c) != 1 || len(c[0].Status.Conditions) != 0 {
			t.Fatalf("CSRs %+v, want one, pending", c)
		}

		setRules(t, name, shipped.Rules)
		n.mustAttest(s, 0)
		if c := csrsFor(t, n.name); len(c) != 1 || approvedCondition(c[0]).Reason != "AttestedByTPM" {
			t.Errorf("CSRs %+v, want the one, approved by the service", c)
		}
	})
}

// setRules replaces the ClusterRole's rules and waits until the API
// server's authorizer answers accordingly for the approve verb.
func setRules(t *testing.T, name string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	r, err := cp.Admin.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Rules = rules
	if _, err := cp.Admin.RbacV1().ClusterRoles().Update(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Verbs, "approve") })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if mayApprove(t, "system:serviceaccount:"+namespace+":"+name) == want {
			return
		}
	}
	t.Fatalf("the authorizer did not take up the new rules of %s", name)
}

// mayApprove asks the API server whether user may approve kubelet client CSRs.
func mayApprove(t *testing.T, user string) bool {
	t.Helper()
	r, err := cp.Admin.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers",
				Name: "kubernetes.io/kube-apiserver-client-kubelet", Verb: "approve"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}
