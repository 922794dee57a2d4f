package kubelettest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// BuildCertagent uses $CERTAGENT_BIN if set (the Makefile builds it), else
// builds cmd/certagent into dir; run from a package directory test/<pkg>.
func BuildCertagent(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("CERTAGENT_BIN"); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(dir, "certagent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/certagent")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return out, cmd.Run()
}

// NodeCSRs lists the CSRs of signer whose subject is node's.
func NodeCSRs(ctx context.Context, cp *controlplane.ControlPlane, node, signer string) ([]certificatesv1.CertificateSigningRequest, error) {
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []certificatesv1.CertificateSigningRequest
	for _, c := range list.Items {
		block, _ := pem.Decode(c.Spec.Request)
		if block == nil {
			continue
		}
		req, err := x509.ParseCertificateRequest(block.Bytes)
		if err == nil && req.Subject.CommonName == "system:node:"+node && c.Spec.SignerName == signer {
			out = append(out, c)
		}
	}
	return out, nil
}

// ApproveServing approves every serving CSR of node as it appears, until
// ctx ends. Run it in a goroutine of its own: it never fails the test, a
// failed list or approval is retried on the next turn.
func ApproveServing(ctx context.Context, cp *controlplane.ControlPlane, node string) {
	for ctx.Err() == nil {
		if list, err := NodeCSRs(ctx, cp, node, certificatesv1.KubeletServingSignerName); err == nil {
			for _, c := range list {
				if len(c.Status.Conditions) == 0 {
					_ = cp.ApproveCSR(ctx, c.Name)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var metricsAddrRE = regexp.MustCompile(`serving /metrics, /healthz and /readyz\s+\{"address": "([0-9.:]+)"`)

// MetricsAddr is the address of certagent's metrics listener, from its log
// (log returns the output so far); it waits up to 30 s for the line.
func MetricsAddr(t *testing.T, log func() string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := metricsAddrRE.FindStringSubmatch(log()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no metrics address in the log:\n%s", log())
	return ""
}
