package command

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
)

// TestAttestEnrollPrintsTheRecordToApply: `certagent attest enroll` reads a
// real (software) TPM and prints the TPMEnrollment naming this node and that
// TPM's endorsement key, in a form the API server takes (its own checks).
func TestAttestEnrollPrintsTheRecordToApply(t *testing.T) {
	dev := swtpm.StartTest(t, swtpm.NewTestCA(t, "vendor"))
	want, err := tpm.Enrollment(dev.Path())
	if err != nil {
		t.Fatal(err)
	}
	path := configDir(t, "nodeName: worker-7\n", nil)
	var out, errOut strings.Builder
	if code := Main([]string{"attest", "enroll", "--config", path, "--tpm", dev.Path()}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rec attestation.TPMEnrollment
	if err := yaml.UnmarshalStrict([]byte(out.String()), &rec); err != nil {
		t.Fatalf("output is not a TPMEnrollment: %v\n%s", err, out.String())
	}
	if verr := rec.Validate(); verr != nil {
		t.Fatalf("the record would be refused: %s", verr.Message)
	}
	if rec.Metadata.Name != "worker-7" || rec.Spec.EKPublicKeyHash != want.EKHash || rec.Spec.EKCertificateIssuer != want.EKCertificateIssuer {
		t.Fatalf("record %+v, want node worker-7 and %+v", rec, want)
	}
	t.Run("no TPM", func(t *testing.T) {
		var out, errOut strings.Builder
		if code := Main([]string{"attest", "enroll", "--config", path, "--tpm", "/nonexistent/tpm0"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "reading the TPM's endorsement key") {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
	})
}
